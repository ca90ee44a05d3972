"""API keys (hashed, atomic file, CLI) and the bounded generation queue, without a model."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from kbqa.cli import main
from kbqa.errors import ConfigError
from kbqa.server import auth
from kbqa.server.queue import GenerationQueue, QueueFull


def test_keys_are_stored_hashed_and_looked_up(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = auth.add_key(path, "alice", ["hr", "legal"])
    stored = path.read_text(encoding="utf-8")
    assert key not in stored and hashlib.sha256(key.encode()).hexdigest() in stored
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temp file

    store = auth.KeyStore(path)
    found = store.lookup(key)
    assert found is not None and found.name == "alice"
    assert found.allows("hr") and not found.allows("finance")
    assert store.lookup(key + "x") is None and store.lookup("") is None

    admin = auth.add_key(path, "admin", ["*"])  # the store rereads the changed file
    assert store.lookup(admin).allows("anything")
    auth.remove_key(path, "alice")
    assert store.lookup(key) is None
    with pytest.raises(ConfigError):
        auth.add_key(path, "admin", ["hr"])
    with pytest.raises(ConfigError):
        auth.add_key(path, "bob", [])
    with pytest.raises(ConfigError):
        auth.remove_key(path, "alice")


def test_a_corrupt_key_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"name": "x"}]}), encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read API keys"):
        auth.KeyStore(path).lookup("kbqa-x")


def test_keys_cli_prints_the_key_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "add", "ci", "--allow", "hr", "--allow", "legal"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith(auth.KEY_PREFIX)
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "ci\thr,legal" in listed and key not in listed
    assert main(["keys", "remove", "ci"]) == 0
    assert main(["keys", "remove", "ci"]) == 1  # a user error, not a traceback


def test_serve_refuses_to_start_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "1"]) == 1
    assert "kbqa keys add" in capsys.readouterr().err


def test_queue_bounds_waiting_and_running() -> None:
    queue = GenerationQueue(concurrency=1, waiting=1)
    first, second = queue.admit(), queue.admit()
    with pytest.raises(QueueFull) as full:
        queue.admit()
    assert full.value.retry_after >= 1
    assert queue.stats()["in_queue"] == 2

    order: list[str] = []

    def run_second() -> None:
        with second.running():
            order.append("second ran")

    with first.running():
        waiter = threading.Thread(target=run_second)
        waiter.start()
        waiter.join(timeout=0.3)
        assert waiter.is_alive() and not order  # one slot: the second waits
    waiter.join(timeout=5)
    assert order == ["second ran"]
    first.release()
    first.release()  # idempotent: still only one ticket returned
    third = queue.admit()
    with pytest.raises(QueueFull):
        queue.admit()
    third.release()
