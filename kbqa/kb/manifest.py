"""The knowledge base's manifest in SQLite: schema, connection, and the SQL every write and read uses."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from langchain_core.documents import Document

from kbqa.embeddings.embedders import EncoderEmbeddings
from kbqa.errors import KnowledgeBaseError
from kbqa.kb.lexical import TOKENIZER_VERSION, encode_row, searchable_text
from kbqa.vector_backends import initialise as initialise_vectors

SCHEMA_VERSION = 1
DB_FILENAME = "kb.sqlite3"
LOCK_FILENAME = ".lock"
# rows per IN (...) query: below SQLite's bound on host parameters
SQL_BATCH = 500

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL UNIQUE,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    document_id INTEGER REFERENCES documents(id),
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX chunks_by_document ON chunks(document_id);
CREATE TABLE embedding_cache (
    text_sha256 TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (text_sha256, embedder)
) WITHOUT ROWID;
"""

# Per-chunk BM25 term counts (see lexical.py), kept in step with `chunks` inside each transaction:
# rows are inserted with their chunk and deleted by the trigger. IF NOT EXISTS: bases made before
# this table existed get it (and a backfill) at their next write.
LEXICAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS bm25_terms (
    chunk_id INTEGER PRIMARY KEY,
    length INTEGER NOT NULL,
    terms BLOB NOT NULL,
    counts BLOB NOT NULL,
    tokenizer INTEGER NOT NULL DEFAULT 1
);
CREATE TRIGGER IF NOT EXISTS bm25_terms_follow_chunks AFTER DELETE ON chunks
BEGIN DELETE FROM bm25_terms WHERE chunk_id = old.id; END;
"""



def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def connect(db_path: Path, *, create: bool = False) -> sqlite3.Connection:
    """Autocommit connection: transactions are explicit, so readers never hold a stale snapshot.

    Only `create` may make the file: a write racing a delete must fail, not leave an empty
    manifest that every later open reads as a broken base.
    """
    uri = f"file:{quote(str(db_path.absolute()))}?mode={'rwc' if create else 'rw'}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                               timeout=30.0)
    except sqlite3.OperationalError:
        if create or db_path.is_file():
            raise
        raise KnowledgeBaseError(f"knowledge base {db_path.parent.name!r} no longer exists "
                                 "(deleted by another process?)") from None
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit must be durable before the old index file it supersedes is deleted.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def commit(conn: sqlite3.Connection) -> None:
    """The single point at which a write becomes visible (tests simulate crashes around it)."""
    conn.execute("COMMIT")


def initialise(folder: Path, embeddings: EncoderEmbeddings, chunk_size: int,
               chunk_overlap: int, vector_meta: dict[str, str]) -> None:
    """A new base's vector store, schema and meta rows, and its writer lock file."""
    initialise_vectors(folder, embeddings.dimension, vector_meta)
    conn = connect(folder / DB_FILENAME, create=True)
    try:
        conn.executescript(SCHEMA + LEXICAL_SCHEMA)
        meta = {"schema_version": SCHEMA_VERSION, "embedder": embeddings.name,
                "dimension": embeddings.dimension, "chunk_size": chunk_size,
                "chunk_overlap": chunk_overlap, "generation": 0, "created_at": now(),
                **vector_meta}
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                         [(key, str(value)) for key, value in meta.items()])
    finally:
        conn.close()
    (folder / LOCK_FILENAME).touch()


def generation_of(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def chunk_fields(raw: str | None) -> dict[str, Any]:
    """A chunk's stored metadata; {} when it is not a JSON object (a damaged row still counts)."""
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def to_document(chunk_id: int, key: str, text: str, metadata: str) -> Document:
    data = json.loads(metadata)
    data["chunk_id"] = chunk_id
    return Document(id=key, page_content=text, metadata=data)


def chunk_counts(conn: sqlite3.Connection, document_ids: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for start in range(0, len(document_ids), SQL_BATCH):
        batch = document_ids[start:start + SQL_BATCH]
        marks = ",".join("?" * len(batch))
        counts.update(conn.execute(
            f"SELECT document_id, count(*) FROM chunks WHERE document_id IN ({marks}) "
            "GROUP BY document_id", batch).fetchall())
    return counts


def delete_documents(conn: sqlite3.Connection, document_ids: list[int],
                      keep_rows: list[int]) -> list[int]:
    """Delete the documents' chunks (and their rows, except `keep_rows`); returns chunk ids."""
    removed: list[int] = []
    keep = set(keep_rows)
    for doc_id in document_ids:
        removed.extend(row[0] for row in conn.execute(
            "SELECT id FROM chunks WHERE document_id = ?", (doc_id,)))
        conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
        if doc_id not in keep:
            conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
    return removed


def delete_chunks_by_key(conn: sqlite3.Connection, keys: list[str]) -> list[int]:
    removed: list[int] = []
    for key in keys:
        row = conn.execute("SELECT id FROM chunks WHERE key = ?", (key,)).fetchone()
        if row:
            removed.append(row[0])
            conn.execute("DELETE FROM chunks WHERE id = ?", (row[0],))
    return removed


def insert_chunk(conn: sqlite3.Connection, key: str, document_id: int | None, text: str,
                  metadata: dict[str, Any]) -> int:
    metadata = {name: value for name, value in metadata.items() if name != "chunk_id"}
    chunk_id = conn.execute(
        "INSERT INTO chunks (key, document_id, text, metadata) VALUES (?, ?, ?, ?)",
        (key, document_id, text, json.dumps(metadata, ensure_ascii=False, default=str))).lastrowid
    conn.execute("INSERT INTO bm25_terms (chunk_id, length, terms, counts, tokenizer) "
                 "VALUES (?, ?, ?, ?, ?)",
                 (chunk_id, *encode_row(searchable_text(text, metadata)), TOKENIZER_VERSION))
    return chunk_id


def has_tokenizer_column(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "tokenizer" for row in conn.execute("PRAGMA table_info(bm25_terms)"))


def ensure_lexical(conn: sqlite3.Connection) -> None:
    """Create the BM25 table if this base predates it, add the `tokenizer` column if it predates
    that, and (re)count the rows that are missing or were written by another tokenizer (readers
    count those from text until this runs)."""
    conn.executescript(LEXICAL_SCHEMA)
    if not has_tokenizer_column(conn):  # rows written before it are version 1's
        conn.execute("ALTER TABLE bm25_terms ADD COLUMN tokenizer INTEGER NOT NULL DEFAULT 1")
    stale = conn.execute("SELECT c.id, c.text, c.metadata FROM chunks c LEFT JOIN bm25_terms t "
                         "ON t.chunk_id = c.id WHERE t.chunk_id IS NULL OR t.tokenizer != ?",
                         (TOKENIZER_VERSION,)).fetchall()
    if stale:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO bm25_terms "
                         "(chunk_id, length, terms, counts, tokenizer) VALUES (?, ?, ?, ?, ?)",
                         [(chunk_id, *encode_row(searchable_text(text, chunk_fields(raw))),
                           TOKENIZER_VERSION) for chunk_id, text, raw in stale])
        conn.execute("COMMIT")
