"""A knowledge base folder: named, persistent, incrementally updated, safe across processes.

On disk a knowledge base is one folder, ``<root>/<name>/``::

    kb.sqlite3            manifest: settings, documents, chunks, BM25 term counts, embedding cache
                          (SQLite, WAL)
    index.<G>.faiss       FAISS index (Flat, IVF or HNSW: vector_backends/faiss_index.py), faiss's serializer
    .lock                 writers hold an exclusive flock on it

or, for a base created with the Milvus vector store, ``milvus.db/`` (Milvus Lite's data) or
nothing (a Milvus server) instead of the index file, plus ``milvus.pending.json`` while a write
is under way. The manifest records which (vector_backends/).

Nothing is pickled. Vectors are keyed by the chunk's SQLite rowid, so removing a document is
a removal by id in the vector backend and a DELETE in SQLite.

Every write is one SQLite transaction that changes the chunks and bumps ``generation``; the
vector backend stages its half before the commit and publishes it after, in a way that survives a
crash in between (vector_backends/base.py). Readers compare the generation in SQLite (one cheap
query) before each search and reload the backend's state when another process has written.

Scores are cosine similarities (embedders return L2-normalised vectors, so inner product equals
cosine): higher means more similar, 1.0 is identical.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from kbqa.embeddings.embedders import EncoderEmbeddings
from kbqa.errors import KnowledgeBaseError, KnowledgeBaseMissing, KnowledgeBaseReplaced
from kbqa.kb import embedding_cache, folders, freshness, manifest, reads
from kbqa.kb.folders import DEFAULT_LOCK_TIMEOUT_S, exclusive_lock
from kbqa.kb.reads import DocumentRecord, LexicalRow
from kbqa.kb.results import IngestStats
from kbqa.vector_backends import (
    IndexChoice,
    VectorBackend,
    VectorDelta,
    VectorStoreConfig,
    open_backend,
)
from kbqa.vector_backends.faiss_index import AUTO_IVF_MIN_CHUNKS, IndexType

__all__ = ["KnowledgeBaseFolder", "WriteTimings"]


@dataclass(frozen=True)
class WriteTimings:
    """Where one write transaction spent its time."""

    index_s: float  # staging the vector changes (FAISS: building and writing the index file)
    commit_s: float  # SQL writes of chunks, BM25 term counts and manifest, and the commit


def _require_kbqa_embedder(embeddings: Embeddings) -> EncoderEmbeddings:
    """The manifest records the embedder's name and dimension, so only embedders that state them fit."""
    if not isinstance(embeddings, EncoderEmbeddings):
        raise KnowledgeBaseError(
            f"{type(embeddings).__name__} does not state a model name and dimension; wrap the model "
            "in kbqa.embeddings.embedders.EncoderEmbeddings so the knowledge base can record which "
            "embedder built it")
    return embeddings


class KnowledgeBaseFolder:
    """A knowledge base folder: its lifecycle, the manifest's reads, the writer lock, generations,
    transactions and recovery (kbqa.kb.store.KnowledgeBase adds search and LangChain's API).

    Use the class methods `create`, `open`, `open_or_create`; the constructor assumes a valid folder.
    Searches are safe from several threads; writes take a cross-process lock.
    `vector_store` picks the backend of a base being created; opening always uses the one its
    manifest records (only the Milvus token is taken from it then).
    """

    def __init__(self, folder: Path, embeddings: EncoderEmbeddings, *,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S, index_type: IndexType = "auto",
                 ivf_min_chunks: int = AUTO_IVF_MIN_CHUNKS,
                 vector_store: VectorStoreConfig | None = None) -> None:
        self.folder = folder
        self.name = folder.name
        self._embeddings = embeddings
        self.lock_timeout = lock_timeout
        # FAISS only, applied at the next write (or rebuild_index); readers use whatever type the
        # file holds. Milvus chooses its own index.
        self.index_type: IndexType = index_type
        self.ivf_min_chunks = ivf_min_chunks
        self.last_ingest_stats: IngestStats | None = None
        self._lock = threading.RLock()
        # Taken before the connection: a base swapped in between is refused at the next write.
        self._identity = freshness.identity(folder)
        self._conn = manifest.connect(folder / manifest.DB_FILENAME)
        try:
            meta = reads.read_meta(self._conn, self.name)
            reads.check_meta(meta, self.name, embeddings)
            self._vectors: VectorBackend = open_backend(
                folder, meta, embeddings.dimension, self.name, vector_store or VectorStoreConfig())
        except BaseException:
            self._conn.close()
            raise
        self.chunk_size = int(meta["chunk_size"])
        self.chunk_overlap = int(meta["chunk_overlap"])
        self._generation = -1

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, root: Path | str, name: str, embeddings: EncoderEmbeddings, *,
               chunk_size: int = 300, chunk_overlap: int = 50,
               lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
               index_type: IndexType = "auto",
               vector_store: VectorStoreConfig | None = None) -> Self:
        """Create an empty knowledge base; built in a hidden folder and renamed, so never half-made.

        `vector_store` (default FAISS) is recorded in the manifest and used for good.
        """
        embeddings = _require_kbqa_embedder(embeddings)
        vector_store = vector_store or VectorStoreConfig()
        folder = folders.make_folder(root, name, embeddings, chunk_size, chunk_overlap, vector_store)
        try:
            kb = cls(folder, embeddings, lock_timeout=lock_timeout, index_type=index_type,
                     vector_store=vector_store)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            kb._refresh()  # a Milvus base creates its collection here
        except BaseException:
            kb.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return kb

    @classmethod
    def open(cls, root: Path | str, name: str, embeddings: EncoderEmbeddings, *,
             repair: bool = False, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
             index_type: IndexType = "auto",
             vector_store: VectorStoreConfig | None = None) -> Self:
        """Open an existing knowledge base, with the vector store its manifest records.

        Raises KnowledgeBaseError if it is missing, was built by another embedder, or its index
        disagrees with its manifest; `repair=True` rebuilds the index from the stored chunk texts
        (cheap: vectors come from the embedding cache) instead of raising on the last. A write
        that was interrupted before its commit is undone first.
        """
        embeddings = _require_kbqa_embedder(embeddings)
        folder = folders.folder_of(root, name)
        if not (folder / manifest.DB_FILENAME).is_file():
            available = ", ".join(folders.list_names(folder.parent)) or "none"
            raise KnowledgeBaseMissing(
                f"no knowledge base named {name!r} in {folder.parent} (available: {available})")
        kb = cls(folder, embeddings, lock_timeout=lock_timeout, index_type=index_type,
                 vector_store=vector_store)
        try:
            kb._finish_interrupted_write()
            kb._refresh()
        except KnowledgeBaseError:
            if not repair:
                kb.close()
                raise
            kb.rebuild_index()
        return kb

    @classmethod
    def open_or_create(cls, root: Path | str, name: str, embeddings: EncoderEmbeddings, *,
                       chunk_size: int = 300, chunk_overlap: int = 50,
                       lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
                       index_type: IndexType = "auto",
                       vector_store: VectorStoreConfig | None = None) -> Self:
        """Open `name` if it exists (its own chunk settings and vector store win), else create it."""
        if folders.exists(root, name):
            return cls.open(root, name, embeddings, lock_timeout=lock_timeout,
                            index_type=index_type, vector_store=vector_store)
        return cls.create(root, name, embeddings, chunk_size=chunk_size,
                          chunk_overlap=chunk_overlap, lock_timeout=lock_timeout,
                          index_type=index_type, vector_store=vector_store)

    def close(self) -> None:
        """Close the reader connection and the vector store's; the instance is unusable afterwards."""
        with self._lock:
            self._conn.close()
            self._vectors.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- reads

    @property
    def embeddings(self) -> EncoderEmbeddings:
        return self._embeddings

    @property
    def generation(self) -> int:
        """The committed write count; changes whenever any process writes (reloads if it did)."""
        self._refresh()
        return self._generation

    @property
    def index_kind(self) -> str:
        """The type of the committed index: FAISS "flat", "ivf" or "hnsw", or Milvus's (e.g.
        "autoindex")."""
        self._refresh()
        return self._vectors.index_kind

    @property
    def vector_store(self) -> str:
        """Where the vectors live, in words (for `kbqa kb show` and the UI)."""
        self._refresh()
        return self._vectors.describe()

    @property
    def chunk_count(self) -> int:
        with self._lock:
            return reads.chunk_count(self._conn)

    def documents(self) -> list[DocumentRecord]:
        """The source files in this knowledge base, sorted by path."""
        with self._lock:
            return reads.documents(self._conn)

    def document_chunks(self, source: str) -> list[Document]:
        """A document's chunks in order (empty if the knowledge base has no such document)."""
        with self._lock:
            return reads.document_chunks(self._conn, source)

    def chunk_texts(self) -> tuple[int, list[int], list[str]]:
        """(generation, chunk ids, texts) in one snapshot (reads.chunk_texts)."""
        with self._lock:
            return reads.chunk_texts(self._conn)

    def lexical_rows(self, after_id: int) -> tuple[int, np.ndarray, list[LexicalRow]]:
        """BM25 rows of chunks newer than `after_id`, in one snapshot (reads.lexical_rows)."""
        with self._lock:
            return reads.lexical_rows(self._conn, after_id)

    def get_chunks(self, chunk_ids: Sequence[int]) -> dict[int, Document]:
        """Chunks by rowid; ids that no longer exist are simply absent from the result."""
        with self._lock:
            return reads.get_chunks(self._conn, chunk_ids)

    # ----------------------------------------------------------------- index loading

    def _refresh(self) -> None:
        """Reload the vectors' state if another writer committed a new generation since we looked."""
        with self._lock:
            if manifest.generation_of(self._conn) != self._generation:
                self._load_index()

    def _load_index(self) -> None:
        """Load the committed generation; retry if a writer commits another under our feet."""
        for _ in range(5):
            self._conn.execute("BEGIN")
            try:
                generation = manifest.generation_of(self._conn)
                count = reads.chunk_count(self._conn)
            finally:
                self._conn.execute("COMMIT")
            try:
                self._vectors.load(generation, count)
            except KnowledgeBaseError:
                if manifest.generation_of(self._conn) != generation:
                    continue
                raise
            self._generation = generation
            return
        raise KnowledgeBaseError(f"knowledge base {self.name!r} kept changing while loading; retry")

    # ----------------------------------------------------------------- writing

    @contextlib.contextmanager
    def writer(self, *, recover: bool = True, refresh: bool = False) -> Iterator[sqlite3.Connection]:
        """Exclusive writer: the cross-process lock plus a connection of its own.

        A separate connection keeps this instance's readers on committed data while a long
        ingest runs in another thread. First undoes what an interrupted write left in the
        vector store (`recover=False` for a rebuild, which replaces it all anyway); `refresh`
        then catches up with writes other processes made before the lock was taken.
        """
        with self._locked_if_still_here():
            conn = manifest.connect(self.folder / manifest.DB_FILENAME)
            try:
                manifest.ensure_lexical(conn)
                if recover:
                    self._recover(conn)
                if refresh:
                    self._refresh()
                yield conn
            finally:
                conn.close()

    @contextlib.contextmanager
    def _locked_if_still_here(self) -> Iterator[None]:
        """The writer lock, once this object's base is known to be the one on disk: a delete
        takes the lock before it moves the folder, so under it the check stays true."""
        gone = KnowledgeBaseMissing(f"knowledge base {self.name!r} was deleted by another process "
                                  "since it was opened; nothing was written")
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(exclusive_lock(self.folder / manifest.LOCK_FILENAME,
                                                   self.lock_timeout, self.name))
            except FileNotFoundError:  # the folder is gone: the lock file cannot be opened
                raise gone from None
            current = freshness.identity(self.folder)
            if current is None:
                raise gone
            if current != self._identity:
                raise KnowledgeBaseReplaced(
                    f"knowledge base {self.name!r} was deleted and re-created by another process "
                    "since it was opened; nothing was written: open it again and retry")
            yield

    def transact(self, conn: sqlite3.Connection,
                 change: Callable[[sqlite3.Connection], VectorDelta]) -> WriteTimings:
        """Apply `change` (SQL) and its vector delta atomically: vectors staged first, SQLite
        commit last; on failure the rollback is followed by the backend's recovery."""
        generation = self._generation + 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            started = time.perf_counter()
            delta = change(conn)
            changed = time.perf_counter()
            self._vectors.stage(delta, generation,
                                IndexChoice(self.index_type, self.ivf_min_chunks))
            indexed = time.perf_counter()
            conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
            manifest.commit(conn)
            timings = WriteTimings(index_s=indexed - changed,
                                   commit_s=(changed - started) + (time.perf_counter() - indexed))
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._vectors.abort(generation)
            self._recover_after_failure(conn, exc)
            raise
        with self._lock:
            self._vectors.publish(generation)
            self._generation = generation
        return timings

    # ----------------------------------------------------------------- recovery

    def _recover(self, conn: sqlite3.Connection) -> None:
        """Bring the vector store back in line with the committed manifest after an interrupted
        write (only Milvus can have one: see vector_backends/milvus_backend.py)."""
        if self._vectors.interrupted:
            self._vectors.recover(
                lambda ids: embedding_cache.committed_vectors(conn, self._embeddings, ids))

    def _recover_after_failure(self, conn: sqlite3.Connection, exc: BaseException) -> None:
        """Compensate right after a failed write; if that fails too, the next open or write will."""
        try:
            self._recover(conn)
        except Exception as problem:  # noqa: BLE001 - the original error is the one to raise
            exc.add_note(f"the vector store of {self.name!r} could not be brought back in line "
                         f"yet ({problem}); its next open or write retries")

    def _finish_interrupted_write(self) -> None:
        """At open: recover from a crashed write, unless a writer is running (it owns the state)."""
        if not self._vectors.interrupted:
            return
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(
                    exclusive_lock(self.folder / manifest.LOCK_FILENAME, 0, self.name))
            except KnowledgeBaseError:
                return
            conn = stack.enter_context(
                contextlib.closing(manifest.connect(self.folder / manifest.DB_FILENAME)))
            self._recover(conn)

    def rebuild_index(self, *, progress: bool = False) -> None:
        """Re-create the vectors (FAISS index or Milvus collection) from the manifest's chunk
        texts (embedding cache first)."""
        with self.writer(recover=False) as conn:
            ids, vectors = embedding_cache.committed_vectors(conn, self._embeddings, None,
                                                             progress=progress)
            with self._lock:
                self._generation = manifest.generation_of(conn)

            def change(_: sqlite3.Connection) -> VectorDelta:
                return VectorDelta(added_ids=ids, added_vectors=[vectors], rebuild=True)

            self.transact(conn, change)
