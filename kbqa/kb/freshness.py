"""Whether an open knowledge base is still the one on disk: one stat per use, not a reload.

Another process (the CLI beside the server, the web app) may delete a knowledge base and create a
new one under the same name; a reader that keeps the old one open would go on answering from a
deleted base. A base's identity is the (device, inode) of its manifest file, taken *before* the
base is opened: while the old manifest is held open the OS cannot hand its inode number to a new
file, so a re-created base always differs and a deleted one has none. If the file is swapped
between the stat and the open, the recorded identity is the older one, which only costs one more
reopen. Within one identity each search already compares the manifest's generation and reloads
what changed (kbqa.kb.base), so this check is all a long-lived reader needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from kbqa.kb import manifest

if TYPE_CHECKING:
    from kbqa.kb.base import KnowledgeBaseFolder

Identity = tuple[int, int]


def identity(folder: Path) -> Identity | None:
    """(device, inode) of the base's manifest, or None when there is no base in `folder`."""
    try:
        stat = (folder / manifest.DB_FILENAME).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.st_dev, stat.st_ino


def retire(kb: KnowledgeBaseFolder) -> None:
    """Let go of a stale base without pulling it from under a request still reading it: its
    connections close when the last user drops the object (closing now would fail that read)."""
    weakref.finalize(kb, _close, kb._conn, kb._vectors)


def _close(conn: object, vectors: object) -> None:
    for resource in (conn, vectors):
        with contextlib.suppress(Exception):  # best effort, at collection time
            resource.close()  # type: ignore[attr-defined]


def writer_busy(folder: Path) -> bool:
    """Whether a writer (of any process) holds the base's lock right now; takes no lock itself."""
    try:
        with (folder / manifest.LOCK_FILENAME).open("rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    return False
