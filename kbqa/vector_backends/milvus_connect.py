"""Connections to Milvus: pymilvus imported only when a Milvus knowledge base is used, one shared
client per address in a process, and clear errors for what users actually run into.

Milvus Lite (a ``*.db`` path) runs inside this process: pymilvus starts an embedded gRPC server
on a free local port per data folder, and that server holds an exclusive lock on the folder for
as long as it runs. So a Lite knowledge base is single-process: several KnowledgeBase objects
in one process share the server (counted here, stopped when the last one closes), but a second
process cannot open the folder until the first has closed it or exited. For several processes
use a Milvus server (``http://host:19530``).
"""

from __future__ import annotations

import fcntl
import importlib.util
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from kbqa.errors import KnowledgeBaseError

INSTALL_HINT = 'pip install "kbqa[milvus]"'

_lock = threading.Lock()
_clients: dict[tuple[str, str], tuple[Any, int]] = {}


def pymilvus() -> ModuleType:
    """The pymilvus module, or a KnowledgeBaseError saying how to install it."""
    try:
        import pymilvus as module
    except ImportError as exc:
        raise KnowledgeBaseError(
            f"this knowledge base keeps its vectors in Milvus, which needs pymilvus and "
            f"milvus-lite: {INSTALL_HINT}") from exc
    return module


def pymilvus_lite() -> None:
    """Raise a KnowledgeBaseError saying how to install milvus-lite if it is missing."""
    if importlib.util.find_spec("milvus_lite") is None:
        raise KnowledgeBaseError(
            f"this knowledge base keeps its vectors in Milvus Lite, which needs milvus-lite: "
            f"{INSTALL_HINT}")


def is_lite(uri: str) -> bool:
    """Milvus Lite URIs are local paths ending in .db (pymilvus's own rule)."""
    return uri.endswith(".db")


def message(exc: Exception) -> str:
    """pymilvus errors carry their text in `.message`; str() wraps it in a repr."""
    return str(getattr(exc, "message", "") or exc)


def acquire(uri: str, token: str | None) -> Any:
    """A MilvusClient for `uri`, shared with other users in this process; pair with `release`."""
    key = _key(uri, token)
    with _lock:
        if key in _clients:
            client, users = _clients[key]
            _clients[key] = (client, users + 1)
            return client
        client = _connect(uri, token)
        _clients[key] = (client, 1)
        return client


def release(uri: str, token: str | None) -> None:
    """Drop one user of the client; the last one closes it (and stops a Lite server)."""
    key = _key(uri, token)
    with _lock:
        client, users = _clients.get(key, (None, 0))
        if client is None:
            return
        if users > 1:
            _clients[key] = (client, users - 1)
            return
        del _clients[key]
        client.close()
        if is_lite(uri):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)


def _key(uri: str, token: str | None) -> tuple[str, str]:
    return (uri, "" if is_lite(uri) else token or "")


def _connect(uri: str, token: str | None) -> Any:
    milvus = pymilvus()
    if is_lite(uri):
        pymilvus_lite()
    try:
        return milvus.MilvusClient(uri=uri, token=token or "")
    except milvus.MilvusException as exc:
        if is_lite(uri) and _held_by_another_process(Path(uri)):
            raise KnowledgeBaseError(
                f"the Milvus Lite data in {uri} is open in another process; Milvus Lite serves "
                "one process at a time: close that process (a running `kbqa serve`, the web "
                "app, another ingest) or use a Milvus server (milvus_uri = "
                "\"http://HOST:19530\") for several processes") from exc
        where = f"Milvus Lite data in {uri}" if is_lite(uri) else f"Milvus at {uri}"
        raise KnowledgeBaseError(f"cannot open {where}: {message(exc)}") from exc


def _held_by_another_process(data_dir: Path) -> bool:
    """Milvus Lite flocks `<data dir>/LOCK` while its server runs; probe it without keeping it."""
    lock_file = data_dir / "LOCK"
    if not lock_file.is_file():
        return False
    with lock_file.open("rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False
