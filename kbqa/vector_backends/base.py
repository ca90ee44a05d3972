"""What a KnowledgeBase needs from whatever holds its vectors, and the pieces backends share.

SQLite stays the source of truth for documents, chunk texts, the embedding cache and BM25; a
backend only holds one L2-normalised vector per chunk, keyed by the chunk's rowid, and is asked
to change them as part of a KnowledgeBase write:

    stage(delta, generation)   before the SQLite commit (under the writer lock)
    publish(generation)        after the commit succeeded
    abort(generation)          after a rollback; then recover() brings the vectors back in line

Because a backend cannot join the SQLite transaction, each one must make a crash between
`stage` and the commit harmless: FAISS writes a new index file per generation (the old one stays
authoritative until the commit); Milvus keeps a journal of the ids a write touched and
`recover` re-derives exactly those from the committed manifest.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kbqa.vector_backends.faiss_index import AUTO_IVF_MIN_CHUNKS, IndexType


@dataclass
class VectorDelta:
    """How one write changes the vectors; `rebuild` starts from an empty store."""

    removed: list[int] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)
    added_vectors: list[np.ndarray] = field(default_factory=list)
    rebuild: bool = False

    def added(self, dimension: int) -> np.ndarray:
        """The added vectors as one (n, dimension) float32 array."""
        if not self.added_vectors:
            return np.zeros((0, dimension), dtype=np.float32)
        return np.concatenate(self.added_vectors).astype(np.float32, copy=False)


@dataclass(frozen=True)
class IndexChoice:
    """Which FAISS index type a write should produce (Milvus picks its own index)."""

    requested: IndexType = "auto"
    ivf_min_chunks: int = AUTO_IVF_MIN_CHUNKS


# Given chunk ids (None: every chunk), the ids the committed manifest still has and their vectors
# (from the embedding cache): what `recover` rebuilds the backend's state from.
StoredVectors = Callable[[list[int] | None], tuple[list[int], np.ndarray]]


class VectorBackend(Protocol):
    """The vector half of a knowledge base."""

    @property
    def index_kind(self) -> str:
        """The committed index's type, e.g. "flat", "ivf", "hnsw" (FAISS) or "autoindex" (Milvus)."""

    def describe(self) -> str:
        """One line for people: the engine, where the vectors live, the index type."""

    def load(self, generation: int, count: int) -> None:
        """Serve the committed `generation`, whose manifest lists `count` chunks; raises
        KnowledgeBaseError (mentioning repair=True) when the stored vectors disagree."""

    def stage(self, delta: VectorDelta, generation: int, choice: IndexChoice) -> None:
        """Apply `delta` as `generation`, before the SQLite commit; must survive a crash."""

    def publish(self, generation: int) -> None:
        """The commit of `generation` succeeded: make it what searches see, drop what it superseded."""

    def abort(self, generation: int) -> None:
        """The transaction that staged `generation` was rolled back."""

    def recover(self, stored: StoredVectors) -> None:
        """Undo what an interrupted write left behind (no-op when there is nothing)."""

    @property
    def interrupted(self) -> bool:
        """Did a write stop between `stage` and `publish` (crashed, or failed to recover)?"""

    def count(self) -> int:
        """Vectors stored now."""

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Top-`n` (chunk id, cosine similarity), most similar first."""

    def vectors(self, chunk_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored vectors of the given chunks; ids not stored are skipped."""

    def close(self) -> None:
        """Release connections; idempotent."""


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename, fsync the folder."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)
