"""Vectors by text hash per embedder, in the manifest: re-ingesting or rebuilding never embeds the same text twice."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
from tqdm.auto import tqdm

from kbqa.embeddings.embedders import EncoderEmbeddings
from kbqa.kb import manifest, reads


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cached_vectors(conn: sqlite3.Connection, embedder: str, hashes: set[str],
                  dimension: int) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    wanted = list(hashes)
    for start in range(0, len(wanted), manifest.SQL_BATCH):
        batch = wanted[start:start + manifest.SQL_BATCH]
        marks = ",".join("?" * len(batch))
        rows = conn.execute(
            f"SELECT text_sha256, vector FROM embedding_cache WHERE embedder = ? "
            f"AND text_sha256 IN ({marks})", [embedder, *batch])
        for digest, blob in rows:
            vector = np.frombuffer(blob, dtype=np.float32)
            if vector.shape == (dimension,):
                found[digest] = vector
    return found


def embed_texts(conn: sqlite3.Connection, embeddings: EncoderEmbeddings, texts: list[str],
                progress: bool) -> tuple[np.ndarray, int]:
    """Vectors for `texts`, from the cache where possible; returns (vectors, cache hits).

    New vectors are cached in their own small commits as they are computed, so an interrupted
    ingest of a large folder resumes without re-embedding what it already did.
    """
    dimension = embeddings.dimension
    result = np.zeros((len(texts), dimension), dtype=np.float32)
    hashes = [text_sha256(text) for text in texts]
    cached = cached_vectors(conn, embeddings.name, set(hashes), dimension)
    todo: dict[str, str] = {}
    for position, (digest, text) in enumerate(zip(hashes, texts)):
        if digest in cached:
            result[position] = cached[digest]
        else:
            todo.setdefault(digest, text)
    hits = len(texts) - sum(1 for digest in hashes if digest not in cached)
    fresh = _embed_missing(conn, embeddings, todo, progress)
    for position, digest in enumerate(hashes):
        if digest in fresh:
            result[position] = fresh[digest]
    return result, hits


def _embed_missing(conn: sqlite3.Connection, embeddings: EncoderEmbeddings,
                   todo: dict[str, str], progress: bool) -> dict[str, np.ndarray]:
    fresh: dict[str, np.ndarray] = {}
    items = list(todo.items())
    # One embed call gets a batch per worker, so a parallel embedder has work for each.
    batch = max(1, embeddings.batch_size) * max(1, embeddings.workers)
    # Cache rows are derived data: a power cut may lose the last few (they are re-embedded),
    # never corrupt them (WAL). Skipping the fsync per batch saves a noticeable share of the embed
    # stage (docs/benchmarks.md §Ingest and embedding speed). The transaction that publishes
    # chunks stays FULL.
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        _embed_batches(conn, embeddings, items, batch, fresh, progress)
    finally:
        conn.execute("PRAGMA synchronous=FULL")
    return fresh


def _embed_batches(conn: sqlite3.Connection, embeddings: EncoderEmbeddings,
                   items: list[tuple[str, str]], batch: int, fresh: dict[str, np.ndarray],
                   progress: bool) -> None:
    """Embed `items` (digest, text) batch by batch, caching each batch in its own commit."""
    with tqdm(total=len(items), desc="embedding", unit="chunk", disable=not progress) as bar:
        for start in range(0, len(items), batch):
            part = items[start:start + batch]
            vectors = embeddings.embed_array([text for _, text in part])
            conn.executemany(
                "INSERT OR REPLACE INTO embedding_cache (text_sha256, embedder, vector) "
                "VALUES (?, ?, ?)",
                [(digest, embeddings.name, vector.astype(np.float32).tobytes())
                 for (digest, _), vector in zip(part, vectors)])
            fresh.update((digest, vector) for (digest, _), vector in zip(part, vectors))
            bar.update(len(part))


def committed_vectors(conn: sqlite3.Connection, embeddings: EncoderEmbeddings,
                      chunk_ids: list[int] | None, *,
                      progress: bool = False) -> tuple[list[int], np.ndarray]:
    """(ids, vectors) of the given chunks (None: all) that the manifest has; the vectors come
    from the cache (re-embedded where it lacks them), for recovery and index rebuilds."""
    rows = reads.texts_by_id(conn, chunk_ids)
    vectors, _ = embed_texts(conn, embeddings, [text for _, text in rows], progress)
    return [row[0] for row in rows], vectors
