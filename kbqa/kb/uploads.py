"""Files uploaded through the web UI: safe names, stored inside the knowledge base, then ingested.

An uploaded file's name comes from the browser and is not trusted. `sanitize_filename` keeps only
the base name, strips control and reserved characters, and refuses names that would be hidden,
empty, of an unsupported type or only dots. `store_upload` writes the bytes into
``<kb folder>/files/`` atomically (temp file + rename) and checks the final path is still inside that
folder. `ingest_uploads` does this for a batch: each file is stored and ingested on its own through
the KnowledgeBase API (which takes the cross-process writer lock), and a failing file is reported
without aborting the others. A re-upload of a file that fails to parse leaves the previous version
(on disk and in the index) in place. Two files of one batch that would be stored under the same
name are refused (the later one), never one silently replacing the other.

An upload is data: bytes (the web app) or a file on disk (the server stages its uploads there, so
no upload is held in memory). A crash between storing a file and committing its ingest leaves a
file in ``files/`` that no document names; `sweep_orphans` removes such files at the next upload
(and at server start), under the writer lock and only once they are older than any store that
may still be waiting for that lock.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kbqa.errors import KbqaError, KnowledgeBaseError

if TYPE_CHECKING:
    from kbqa.kb.store import KnowledgeBase

FILES_DIRNAME = "files"
MAX_NAME_BYTES = 200
# Characters Windows rejects in names, plus separators; control characters are removed separately.
_RESERVED_CHARS = re.compile(r'[<>:"/\\|?*]')
_WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul",
                              *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))})


Data = bytes | Path  # an upload's content: in memory, or a file to copy from


class UploadError(KbqaError):
    """An uploaded file was refused (unsafe or unsupported name, too large); the batch goes on."""


@dataclass(frozen=True)
class UploadOutcome:
    """What happened to one uploaded file: the store's status, or 'failed' with the reason."""

    name: str            # the name as uploaded
    stored_name: str | None  # the sanitised name it was stored under (None when refused)
    status: str          # added | updated | skipped | failed
    chunks: int = 0
    error: str | None = None


def supported_suffixes() -> frozenset[str]:
    from kbqa.ingest import SUPPORTED_SUFFIXES

    return SUPPORTED_SUFFIXES


def sanitize_filename(name: str) -> str:
    """A safe base name for an uploaded file, or UploadError saying why there is none.

    'a/b/../报告.PDF' → '报告.PDF'; '../../etc/passwd' → refused (no supported suffix);
    '.env.txt' → refused (hidden); 'C:\\docs\\x.md' → 'x.md'.
    """
    if not isinstance(name, str):
        raise UploadError("the file name is not text")
    text = unicodedata.normalize("NFC", name)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")  # controls, NUL, …
    base = re.split(r"[/\\]", text)[-1].strip()  # only the base name, whatever the client's OS
    base = _RESERVED_CHARS.sub("_", base).strip().rstrip(".")
    if not base or set(base) <= {"."}:
        raise UploadError(f"{name!r}: the file name is empty after removing its path")
    if base.startswith("."):
        raise UploadError(f"{name!r}: hidden files (names starting with '.') are not accepted")
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem.strip():
        raise UploadError(f"{name!r}: the file name has no extension; supported: "
                          f"{' '.join(sorted(supported_suffixes()))}")
    if f".{suffix.lower()}" not in supported_suffixes():
        raise UploadError(f"{name!r}: .{suffix} files are not supported; supported: "
                          f"{' '.join(sorted(supported_suffixes()))}")
    stem = stem.strip()
    if stem.split(".")[0].lower() in _WINDOWS_DEVICES:
        stem = "_" + stem
    limit = MAX_NAME_BYTES - len(suffix.encode()) - 1
    while len(stem.encode("utf-8")) > limit:  # keep whole characters
        stem = stem[:-1]
    return f"{stem}.{suffix}"


def files_folder(kb: KnowledgeBase) -> Path:
    """Where a knowledge base keeps its uploaded files: ``<kb folder>/files``."""
    return Path(kb.folder) / FILES_DIRNAME


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _size(data: Data) -> int:
    return data.stat().st_size if isinstance(data, Path) else len(data)


def store_upload(folder: Path, name: str, data: Data, *, max_bytes: int | None = None) -> Path:
    """Write `data` (bytes, or a file's content) as `folder/<sanitised name>` atomically;
    returns the path. Raises UploadError."""
    safe = sanitize_filename(name)
    size = _size(data)
    if max_bytes is not None and size > max_bytes:
        raise UploadError(f"{name!r}: {size / 1e6:.1f} MB is over the "
                          f"{max_bytes / 1e6:.0f} MB limit (setting max_file_mb)")
    if not size:
        raise UploadError(f"{name!r}: the file is empty")
    try:
        folder.mkdir(exist_ok=True)  # never its parents: a base deleted meanwhile stays deleted
    except FileNotFoundError:
        raise UploadError(f"{name!r}: knowledge base {folder.parent.name!r} was deleted by another "
                          "process; nothing was stored") from None
    target = folder / safe
    if not _inside(target, folder) or target.is_symlink():
        raise UploadError(f"{name!r}: refusing to write outside {folder}")
    with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=".upload-", suffix=".tmp",
                                     delete=False) as out:
        if isinstance(data, Path):
            with data.open("rb") as source:
                shutil.copyfileobj(source, out, 1024 * 1024)
        else:
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, target)
    return target


def ingest_uploads(kb: KnowledgeBase, uploads: Iterable[tuple[str, Data]], *, max_file_mb: int,
                   on_progress: Callable[[int, int, str], None] | None = None,
                   on_page: Callable[[int, int], None] | None = None
                   ) -> list[UploadOutcome]:
    """Store and ingest each (name, data) upload; one outcome per upload, in order.

    `on_progress(done, total, name)` is called before each file and once at the end;
    `on_page(done, total)` after each page of a PDF or image being read.
    """
    uploads = list(uploads)
    folder = files_folder(kb)
    sweep_orphans(kb)
    outcomes: list[UploadOutcome] = []
    taken: dict[str, str] = {}  # stored name -> the upload that took it in this batch
    for done, (name, data) in enumerate(uploads):
        if on_progress:
            on_progress(done, len(uploads), name)
        clash = _clash(name, taken)
        outcomes.append(UploadOutcome(name, None, "failed", error=clash) if clash else
                        _ingest_one(kb, folder, name, data, max_file_mb * 1024 * 1024, on_page))
    if on_progress:
        on_progress(len(uploads), len(uploads), "")
    return outcomes


def duplicate_names(names: Iterable[str]) -> str | None:
    """Why a batch cannot be stored as it is (two names that store as one), or None."""
    taken: dict[str, str] = {}
    for name in names:
        if clash := _clash(name, taken):
            return clash
    return None


def _clash(name: str, taken: dict[str, str]) -> str | None:
    try:
        safe = sanitize_filename(name)
    except UploadError:
        return None  # refused on its own later, with its own reason
    if safe in taken:
        return (f"{name!r} and {taken[safe]!r} would both be stored as {safe!r}; "
                "rename one and upload it again")
    taken[safe] = name
    return None


def _ingest_one(kb: KnowledgeBase, folder: Path, name: str, data: Data, max_bytes: int,
                on_page: Callable[[int, int], None] | None = None) -> UploadOutcome:
    try:
        safe = sanitize_filename(name)
    except UploadError as exc:
        return UploadOutcome(name, None, "failed", error=str(exc))
    target = folder / safe
    backup: Path | None = None
    try:
        if target.is_file() and not target.is_symlink():  # the previous version, kept by a link
            backup = folder / f".backup-{uuid.uuid4().hex}"
            os.link(target, backup)
        path = store_upload(folder, name, data, max_bytes=max_bytes)
        results = kb.ingest([path], on_page=on_page)
    except (KbqaError, OSError) as exc:
        _restore(target, backup)
        return UploadOutcome(name, safe, "failed", error=str(exc))
    result = results[0] if results else None
    if result is None or result.status == "failed":
        _restore(target, backup)  # keep the previous, indexed version of the file
        if result is None:
            return UploadOutcome(name, safe, "failed",
                                 error="the knowledge base did not take the file")
    elif backup is not None:
        backup.unlink(missing_ok=True)
    return UploadOutcome(name, safe, result.status, chunks=result.chunks, error=result.error)


def _restore(target: Path, backup: Path | None) -> None:
    try:
        if backup is None:
            target.unlink(missing_ok=True)
        else:
            os.replace(backup, target)
    except OSError:  # pragma: no cover - best effort; the index is unaffected
        pass


def sweep_orphans(kb: KnowledgeBase) -> list[str]:
    """Remove files in ``files/`` that no document names (left by a crash between store and
    commit); returns their names. Runs under the writer lock, so no ingest is under way, and
    spares files younger than twice the lock's timeout: their store may still wait for it."""
    folder = files_folder(kb)
    if not folder.is_dir():
        return []
    cutoff = time.time() - max(60.0, 2 * kb.lock_timeout)
    removed: list[str] = []
    with kb.writer(recover=False) as conn:
        known = {row[0] for row in conn.execute("SELECT source FROM documents")}
        for path in folder.iterdir():
            try:
                if (path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff
                        and str(path.resolve()) not in known):
                    path.unlink()
                    removed.append(path.name)
            except OSError:  # pragma: no cover - gone meanwhile, or not ours to remove
                continue
    return removed


def remove_document(kb: KnowledgeBase, source: str) -> int:
    """Remove a document from the knowledge base (and its uploaded copy, if it is one of ours)."""
    chunks = kb.remove_document(source)
    path = Path(source)
    folder = files_folder(kb)
    try:
        if path.is_file() and _inside(path, folder):
            path.unlink()
    except OSError as exc:
        raise KnowledgeBaseError(f"{source} left the knowledge base but its file could not be "
                                 f"deleted: {exc}") from exc
    return chunks
