"""KnowledgeBase: a knowledge base folder (kbqa.kb.base) as a LangChain VectorStore, with the
vector searches retrieval builds on and ingest/sync/remove (kbqa.kb.indexing) as methods."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from kbqa.kb import embedding_cache, indexing, manifest
from kbqa.errors import KnowledgeBaseError
from kbqa.kb.base import KnowledgeBaseFolder
from kbqa.kb.results import IngestResult
from kbqa.vector_backends import VectorDelta


class KnowledgeBase(KnowledgeBaseFolder, VectorStore):
    """A named knowledge base on disk: documents in, cosine-ranked chunks out (see kbqa.kb.base
    for the folder, its locks and transactions)."""

    def ingest(self, paths: Iterable[Path | str], *, progress: bool = False,
               on_page: Callable[[int, int], None] | None = None) -> list[IngestResult]:
        """Add new files, replace changed ones, skip unchanged ones (see kbqa.kb.indexing.ingest)."""
        return indexing.ingest(self, paths, progress=progress, on_page=on_page)

    def sync(self, folder: Path | str, *, progress: bool = False) -> list[IngestResult]:
        """Make the knowledge base mirror `folder` (see kbqa.kb.indexing.sync)."""
        return indexing.sync(self, folder, progress=progress)

    def remove_document(self, source: Path | str) -> int:
        """Remove one source file's chunks; returns how many (see kbqa.kb.indexing.remove)."""
        return indexing.remove(self, source)

    # ----------------------------------------------------------------- searching

    def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding (1-d, L2-normalised float32)."""
        return self._embeddings.embed_array([query], is_query=True)[0]

    def search_vector(self, vector: np.ndarray | Sequence[float], n: int) -> list[tuple[int, float]]:
        """Top-`n` (chunk id, cosine similarity) for a query vector, most similar first."""
        self._refresh()
        return self._vectors.search(np.asarray(vector, dtype=np.float32), n)

    def cosine_scores(self, vector: np.ndarray | Sequence[float],
                      chunk_ids: Iterable[int]) -> dict[int, float]:
        """Cosine similarity of the query vector to given chunks (ids missing from the index skipped)."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        return {chunk_id: float(stored @ query)
                for chunk_id, stored in self.chunk_vectors(chunk_ids).items()}

    def chunk_vectors(self, chunk_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored (L2-normalised) vectors of given chunks, read back from the index; ids missing
        from it are skipped. For scoring candidates from other rankers and for MMR."""
        self._refresh()
        return self._vectors.vectors(chunk_ids)

    def similarity_search_with_score_by_vector(
            self, embedding: Sequence[float], k: int = 4) -> list[tuple[Document, float]]:
        """(chunk, cosine similarity) pairs, most similar first; higher = more similar."""
        hits = self.search_vector(embedding, k)
        chunks = self.get_chunks([chunk_id for chunk_id, _ in hits])
        return [(chunks[chunk_id], score) for chunk_id, score in hits if chunk_id in chunks]

    def similarity_search_with_score(self, query: str, k: int = 4,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """(chunk, cosine similarity) pairs, most similar first; higher = more similar."""
        return self.similarity_search_with_score_by_vector(self.query_vector(query), k)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Scores already are cosine similarities (higher = more similar); clip into LangChain's [0, 1]."""
        return lambda score: min(1.0, max(0.0, score))

    # ----------------------------------------------------------------- LangChain writes

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Add loose texts (not tied to a file). Given ids replace existing chunks with those ids."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        keys = [str(key) if key else uuid.uuid4().hex for key in (ids or [None] * len(texts))]
        if not texts:
            return []
        with self.writer() as conn:
            self._refresh()
            vectors, _ = embedding_cache.embed_texts(conn, self._embeddings, texts, progress=False)

            def change(tx: sqlite3.Connection) -> VectorDelta:
                delta = VectorDelta(removed=manifest.delete_chunks_by_key(tx, keys))
                for position, (key, text) in enumerate(zip(keys, texts)):
                    metadata = dict(metadatas[position]) if metadatas else {}
                    delta.added_ids.append(manifest.insert_chunk(tx, key, None, text, metadata))
                delta.added_vectors.append(vectors)
                return delta

            self.transact(conn, change)
        return keys

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete chunks by id (the Document.id values); `ids=None` empties the knowledge base."""
        with self.writer() as conn:
            self._refresh()

            def change(tx: sqlite3.Connection) -> VectorDelta:
                if ids is None:
                    removed = [row[0] for row in tx.execute("SELECT id FROM chunks")]
                    tx.execute("DELETE FROM chunks")
                    tx.execute("DELETE FROM documents")
                    return VectorDelta(removed=removed)
                return VectorDelta(removed=manifest.delete_chunks_by_key(tx, [str(i) for i in ids]))

            self.transact(conn, change)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Chunks whose Document.id is in `ids` (unknown ids are skipped)."""
        found: list[Document] = []
        with self._lock:
            for key in dict.fromkeys(str(i) for i in ids):
                row = self._conn.execute(
                    "SELECT id, key, text, metadata FROM chunks WHERE key = ?", (key,)).fetchone()
                if row:
                    found.append(manifest.to_document(*row))
        return found

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, root: Path | str | None = None,
                   name: str = "default", **kwargs: Any) -> KnowledgeBase:
        """LangChain constructor: open or create `<root>/<name>` and add the texts.

        `root` is required because a knowledge base always lives on disk.
        """
        if root is None:
            raise KnowledgeBaseError("KnowledgeBase.from_texts needs root=<folder for knowledge bases>")
        kb = cls.open_or_create(root, name, embedding, **kwargs)
        kb.add_texts(texts, metadatas, ids=ids)
        return kb
