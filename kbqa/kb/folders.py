"""Knowledge base folders on disk: their names, listing, atomic creation, deletion and the writer lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from kbqa.embeddings.embedders import EncoderEmbeddings
from kbqa.errors import KnowledgeBaseBusy, KnowledgeBaseError, KnowledgeBaseMissing
from kbqa.kb import manifest, reads
from kbqa.vector_backends import VectorStoreConfig, new_meta
from kbqa.vector_backends import drop as drop_vectors

DEFAULT_LOCK_TIMEOUT_S = 10.0
# A name becomes a folder: no separators, no leading dot or space, nothing Windows rejects.
_NAME_RE = re.compile(r'^(?![.\s])[^/\\\x00-\x1f\x7f:*?"<>|]{1,64}(?<!\s)$')


def validate_name(name: str) -> str:
    """Return `name` if it can safely be a knowledge base folder, else raise KnowledgeBaseError."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise KnowledgeBaseError(
            f"invalid knowledge base name {name!r}: use 1-64 characters, no path separators, "
            "no leading dot or whitespace, none of :*?\"<>|")
    return name


def folder_of(root: Path | str, name: str) -> Path:
    """The folder a knowledge base called `name` has (or would have) under `root`."""
    return Path(root).expanduser() / validate_name(name)


def exists(root: Path | str, name: str) -> bool:
    return (folder_of(root, name) / manifest.DB_FILENAME).is_file()


def list_names(root: Path | str) -> list[str]:
    """Names of the knowledge bases under `root`, sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir()
                  if _NAME_RE.match(entry.name) and (entry / manifest.DB_FILENAME).is_file())


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout: float, name: str) -> Iterator[None]:
    """flock on a fresh file description, so two writers in one process also exclude each other."""
    with path.open("a+b") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KnowledgeBaseBusy(
                        f"knowledge base {name!r} is locked by another writer "
                        f"(waited {timeout:g} s); try again when it has finished") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def make_folder(root: Path | str, name: str, embeddings: EncoderEmbeddings, chunk_size: int,
                chunk_overlap: int, vector_store: VectorStoreConfig) -> Path:
    """A new knowledge base folder with its manifest, built in a hidden folder and renamed, so it is
    never seen half-made."""
    if chunk_size <= 0 or not 0 <= chunk_overlap < chunk_size:
        raise KnowledgeBaseError(
            f"need chunk_size > 0 and 0 <= chunk_overlap < chunk_size, "
            f"got {chunk_size} and {chunk_overlap}")
    folder = folder_of(root, name)
    root = folder.parent
    if folder.exists():
        raise KnowledgeBaseError(f"knowledge base {name!r} already exists in {root}")
    root.mkdir(parents=True, exist_ok=True)
    vector_meta = new_meta(vector_store, name)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.creating-", dir=root))
    try:
        manifest.initialise(staging, embeddings, chunk_size, chunk_overlap, vector_meta)
        os.rename(staging, folder)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise KnowledgeBaseError(f"cannot create knowledge base {name!r} in {root}: {exc}") from exc
    return folder


def delete_kb(root: Path | str, name: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
              vector_store: VectorStoreConfig | None = None) -> None:
    """Delete a knowledge base folder, and its Milvus collection if it has one on a server;
    waits for (or refuses during) a running write. `vector_store` supplies a Milvus token."""
    folder = folder_of(root, name)
    if not (folder / manifest.DB_FILENAME).is_file():
        raise KnowledgeBaseMissing(f"no knowledge base named {name!r} in {folder.parent}")
    graveyard = folder.parent / f".{name}.deleting-{uuid.uuid4().hex[:8]}"
    with exclusive_lock(folder / manifest.LOCK_FILENAME, lock_timeout, name):
        conn = manifest.connect(folder / manifest.DB_FILENAME)
        try:
            meta = reads.read_meta(conn, name)
        except KnowledgeBaseError:  # an empty manifest: nothing recorded outside the folder
            meta = {}
        finally:
            conn.close()
        # First: if the collection cannot be dropped, the folder keeps its name on record.
        drop_vectors(folder, meta, vector_store or VectorStoreConfig())
        os.rename(folder, graveyard)
    shutil.rmtree(graveyard, ignore_errors=True)
