"""The default backend: a FAISS index in the knowledge base folder, one file per generation.

Why the index file carries a generation number ``G``: a write builds the new index in memory,
writes it to ``index.<G+1>.faiss`` (temp file, fsync, rename), and only then is the SQLite
transaction committed that both changes the chunks and sets ``generation = G+1``. A crash before
that commit leaves SQLite at ``G`` with ``index.<G>.faiss`` untouched; a crash after it leaves
``G+1`` complete. Old index files are deleted only after the commit. Nothing is ever pending
across a crash, so `recover` has nothing to do.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from kbqa.errors import KnowledgeBaseError
from kbqa.vector_backends.base import IndexChoice, StoredVectors, VectorDelta, atomic_write
from kbqa.vector_backends.faiss_index import empty_flat, kind_of, updated
from kbqa.vector_backends.faiss_index import search as search_index

_INDEX_FILE_RE = re.compile(r"^index\.(\d+)\.faiss$")


def index_filename(generation: int) -> str:
    return f"index.{generation}.faiss"


def _read_index(path: Path) -> faiss.Index:
    return faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))


def _write_index(index: faiss.Index, path: Path) -> None:
    atomic_write(path, faiss.serialize_index(index).tobytes())


def _remove_stale_files(folder: Path, keep_generation: int) -> None:
    """Delete superseded index files and temp files left by writers that crashed."""
    for entry in folder.iterdir():
        match = _INDEX_FILE_RE.match(entry.name)
        stale_index = match is not None and int(match.group(1)) != keep_generation
        stale_temp = entry.name.startswith(".index.") and entry.name.endswith(".tmp")
        if stale_index or stale_temp:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


class FaissBackend:
    """Flat, IVF or HNSW (vector_index.py) held in memory, loaded from the committed file."""

    def __init__(self, folder: Path, dimension: int, kb_name: str) -> None:
        self.folder = folder
        self.dimension = dimension
        self.kb_name = kb_name
        # Replaced, never mutated, so a search can keep using the reference it took.
        self.index: faiss.Index = empty_flat(dimension)
        self._staged: faiss.Index | None = None

    @staticmethod
    def initialise(folder: Path, dimension: int) -> None:
        """Write a new knowledge base's empty generation-0 index."""
        _write_index(empty_flat(dimension), folder / index_filename(0))

    @property
    def index_kind(self) -> str:
        return kind_of(self.index)

    def describe(self) -> str:
        return f"faiss ({self.index_kind} index, {self.index.ntotal} vectors)"

    def load(self, generation: int, count: int) -> None:
        path = self.folder / index_filename(generation)
        try:
            index = _read_index(path)
        except (FileNotFoundError, RuntimeError) as exc:
            raise KnowledgeBaseError(
                f"knowledge base {self.kb_name!r}: index file {path.name} is missing or unreadable "
                f"({exc}); open it with repair=True to rebuild the index") from exc
        if index.d != self.dimension or index.ntotal != count:
            raise KnowledgeBaseError(
                f"knowledge base {self.kb_name!r} is inconsistent: {path.name} holds {index.ntotal} "
                f"{index.d}-d vectors but the manifest lists {count} chunks "
                f"({self.dimension}-d); open it with repair=True to rebuild the index")
        self.index = index

    def stage(self, delta: VectorDelta, generation: int, choice: IndexChoice) -> None:
        """Build the new index from the current one (left untouched) and write its file."""
        self._staged = updated(self.index, np.asarray(delta.removed, dtype=np.int64),
                               np.asarray(delta.added_ids, dtype=np.int64),
                               delta.added(self.dimension), choice.requested,
                               rebuild=delta.rebuild, ivf_min_chunks=choice.ivf_min_chunks)
        _write_index(self._staged, self.folder / index_filename(generation))

    def publish(self, generation: int) -> None:
        if self._staged is not None:
            self.index, self._staged = self._staged, None
        _remove_stale_files(self.folder, generation)

    def abort(self, generation: int) -> None:
        self._staged = None
        with contextlib.suppress(FileNotFoundError):
            (self.folder / index_filename(generation)).unlink()

    def recover(self, stored: StoredVectors) -> None:
        """Nothing to do: an uncommitted generation's file is never read and is removed later."""

    @property
    def interrupted(self) -> bool:
        return False

    def count(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        index = self.index
        if n <= 0 or index.ntotal == 0:
            return []
        scores, ids = search_index(index, query, min(n, index.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def vectors(self, chunk_ids: Iterable[int]) -> dict[int, np.ndarray]:
        index = self.index
        found: dict[int, np.ndarray] = {}
        for chunk_id in chunk_ids:
            try:
                found[int(chunk_id)] = index.reconstruct(int(chunk_id))
            except RuntimeError:
                continue
        return found

    def close(self) -> None:
        """Nothing to release: the index is plain memory."""
