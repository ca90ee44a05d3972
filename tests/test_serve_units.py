"""API keys (hashed, atomic file, CLI), the bounded generation queue and the ingestion job store,
without a model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kbqa.cli import main
from kbqa.errors import ConfigError
from kbqa.server import auth
from kbqa.server.jobs import Jobs
from kbqa.server.jobstore import Job, JobStore
from kbqa.server.queue import GenerationQueue, QueueFull
from kbqa.kb.uploads import UploadOutcome


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


# ------------------------------------------------------------------ ingestion jobs on disk


def outcome(name: str, status: str = "added") -> UploadOutcome:
    return UploadOutcome(name=name, stored_name=name, status=status, chunks=1)


def wait_for(store: JobStore, kb: str, job_id: str, status: str) -> Job:
    deadline = time.monotonic() + 10
    while (job := store.get(kb, job_id)) is None or job.status != status:
        assert time.monotonic() < deadline, f"job {job_id} never became {status}: {job}"
        time.sleep(0.02)
    return job


def staged(jobs: Jobs, name: str) -> tuple[list[tuple[str, Path]], Path]:
    """An upload as the API stages it: its bytes in a job folder on disk."""
    folder = jobs.staging()
    (folder / name).write_bytes(b"x")
    return [(name, folder / name)], folder


def test_a_dead_servers_staged_uploads_are_removed_at_the_next_start(tmp_path: Path) -> None:
    dead = tmp_path / "incoming" / "0123abcd" / "job"  # an owner with no live lock
    dead.mkdir(parents=True)
    (dead / "a.md").write_bytes(b"x")
    live = Jobs(lambda kb, uploads, progress: [], JobStore(tmp_path))
    mine = live.staging()
    Jobs(lambda kb, uploads, progress: [], JobStore(tmp_path))  # a second server over the same HOME
    assert not dead.parent.exists() and mine.is_dir()  # a live owner's files are kept
    live.shutdown()


def test_finished_jobs_keep_their_result_across_a_restart(tmp_path: Path) -> None:
    release = threading.Event()

    def ingest(kb: str, uploads: list[tuple[str, Path]], progress: object) -> list[UploadOutcome]:
        assert all(path.read_bytes() for _, path in uploads)  # the bytes wait on disk
        release.wait(10)
        return [outcome(name) for name, _ in uploads]

    jobs = Jobs(ingest, JobStore(tmp_path))
    first = jobs.submit("hr", *staged(jobs, "手册.md"))
    second = jobs.submit("hr", *staged(jobs, "b.md"))  # queued behind the first
    wait_for(jobs.store, "hr", first.id, "running")
    stopping = threading.Thread(target=jobs.shutdown)  # a clean stop: the running job finishes
    stopping.start()
    release.set()
    stopping.join(timeout=10)
    assert not jobs.incoming.exists()  # no upload's file is left behind, run or dropped

    store = JobStore(tmp_path)  # the next server
    done = store.get("hr", first.id)
    assert done is not None and done.status == "done" and done.files == ["手册.md"]
    assert done.outcomes == [{"name": "手册.md", "status": "added", "chunks": 1, "error": None}]
    dropped = store.get("hr", second.id)
    assert dropped is not None and dropped.status == "interrupted"
    assert "send the upload again" in (dropped.error or "")
    assert store.get("finance", first.id) is None  # a job is found only under its own KB
    assert [job.id for job in store.recent("hr", 10)] == [second.id, first.id]


def test_a_crashed_servers_jobs_read_interrupted(tmp_path: Path) -> None:
    """A real crash: another process takes a job, is seen running while alive, then is killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib\n"
         "from kbqa.server.jobstore import JobStore\n"
         "store = JobStore(pathlib.Path(sys.argv[1]))\n"
         "job = store.add('hr', ['a.md'])\n"
         "store.update(job.id, 'running')\n"
         "print(job.id, flush=True)\n"
         "sys.stdin.read()\n", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        job_id = child.stdout.readline().strip()
        store = JobStore(tmp_path)
        assert store.get("hr", job_id).status == "running"  # its owner is alive
    finally:
        child.kill()
        child.wait(timeout=10)
    job = store.get("hr", job_id)
    assert job.status == "interrupted" and "send the upload again" in job.error
    owners = {path.stem for path in (tmp_path / "owners").glob("*.lock")}
    assert store.owner in owners and len(owners) == 2  # ours, and the dead one's
    later = JobStore(tmp_path)  # a later start clears the dead owner's lock file
    assert {path.stem for path in (tmp_path / "owners").glob("*.lock")} == {store.owner,
                                                                            later.owner}


def test_job_history_is_bounded(tmp_path: Path) -> None:
    store = JobStore(tmp_path, keep=3)
    ids = []
    for n in range(5):
        job = store.add("hr", [f"{n}.md"])
        store.update(job.id, "done", outcomes=[])
        ids.append(job.id)
    unfinished = store.add("hr", ["late.md"])  # never dropped while queued or running
    assert [job.id for job in store.recent("hr", 10)] == [unfinished.id, *ids[:2:-1]]
    assert store.get("hr", ids[0]) is None


def test_a_job_store_from_before_progress_gains_the_column_and_keeps_its_jobs(tmp_path: Path) -> None:
    """A jobs.sqlite3 written before jobs reported progress opens, its jobs read with no progress,
    and a running job's progress is kept until its status changes."""
    import sqlite3

    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        db.executescript("""CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE, kb TEXT NOT NULL, owner TEXT NOT NULL, status TEXT NOT NULL,
            files TEXT NOT NULL, outcomes TEXT NOT NULL, error TEXT, created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL);
            INSERT INTO jobs (id, kb, owner, status, files, outcomes, created_at, updated_at)
            VALUES ('old', 'hr', 'gone', 'done', '["a.md"]', '[]', 1, 1);""")
    db.close()
    store = JobStore(tmp_path)
    old = store.get("hr", "old")
    assert old is not None and old.status == "done" and old.view()["progress"] is None
    job = store.add("hr", ["scan.pdf"])
    store.set_progress(job.id, {"file": "scan.pdf", "page": 1, "pages": 3})  # queued: not kept
    assert store.get("hr", job.id).progress is None
    store.update(job.id, "running")
    store.set_progress(job.id, {"file": "scan.pdf", "page": 2, "pages": 3})
    other = JobStore(tmp_path)  # another server over the same HOME sees it
    assert other.get("hr", job.id).progress == {"file": "scan.pdf", "page": 2, "pages": 3}
    other.close()
    store.update(job.id, "done")
    assert store.get("hr", job.id).progress is None
    store.close()
