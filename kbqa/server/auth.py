"""API keys for `kbqa serve`: stored only as SHA-256 digests, each allowed a set of knowledge bases.

A key is 256 random bits, so a plain SHA-256 digest cannot be brute-forced and needs no salt; the
file never holds a usable key. The file is JSON, written atomically (temp file + fsync + rename),
and reloaded by the server when it changes, so `kbqa keys add/remove` act on a running server.
A key's `kbs` list names the knowledge bases it may see, query, change or create; "*" means all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kbqa.errors import ConfigError

KEY_PREFIX = "kbqa-"
ALL_KBS = "*"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: its name, digest and the knowledge bases it is allowed."""

    name: str
    sha256: str
    kbs: tuple[str, ...]
    created: str = ""

    def allows(self, kb: str) -> bool:
        return ALL_KBS in self.kbs or kb in self.kbs


def _read(path: Path) -> list[ApiKey]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [ApiKey(name=k["name"], sha256=k["sha256"], kbs=tuple(k["kbs"]),
                       created=k.get("created", "")) for k in data["keys"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read API keys from {path}: {exc}") from exc


def _write(path: Path, keys: list[ApiKey]) -> None:
    data = {"keys": [{"name": k.name, "sha256": k.sha256, "kbs": list(k.kbs),
                      "created": k.created} for k in keys]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp",
                                     delete=False) as out:
        json.dump(data, out, ensure_ascii=False, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(out.name, 0o600)
    os.replace(out.name, path)


def add_key(path: Path, name: str, kbs: list[str]) -> str:
    """Create a key allowed `kbs`; returns the key itself, which is shown once and never stored."""
    if not name.strip() or not kbs:
        raise ConfigError("a key needs a name and at least one knowledge base (or '*')")
    keys = _read(path)
    if any(k.name == name for k in keys):
        raise ConfigError(f"an API key named {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write(path, [*keys, ApiKey(name=name, sha256=digest(key), kbs=tuple(kbs), created=created)])
    return key


def remove_key(path: Path, name: str) -> None:
    keys = _read(path)
    if not any(k.name == name for k in keys):
        raise ConfigError(f"no API key named {name!r}")
    _write(path, [k for k in keys if k.name != name])


def list_keys(path: Path) -> list[ApiKey]:
    return _read(path)


class KeyStore:
    """Looks keys up by digest; rereads the file when its modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: list[ApiKey] = []

    def _current(self) -> list[ApiKey]:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._keys = _read(self.path) if stamp else []
                self._stamp = stamp
            return self._keys

    def __len__(self) -> int:
        return len(self._current())

    def lookup(self, key: str) -> ApiKey | None:
        wanted = digest(key)
        match = None
        for stored in self._current():  # compare every digest: no early exit to time
            if hmac.compare_digest(stored.sha256, wanted):
                match = stored
        return match
