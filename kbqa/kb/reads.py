"""What readers ask the manifest: settings, documents, chunks and BM25 rows, each in one snapshot."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from langchain_core.documents import Document

from kbqa.embeddings.embedders import EncoderEmbeddings
from kbqa.errors import KnowledgeBaseError
from kbqa.kb import manifest
from kbqa.kb.lexical import TOKENIZER_VERSION, searchable_text

# (chunk id, length, terms blob, counts blob, text): see lexical_rows
LexicalRow = tuple[int, int | None, bytes | None, bytes | None, str | None]


@dataclass(frozen=True)
class DocumentRecord:
    """One source file as the manifest knows it."""

    source: str
    filename: str
    sha256: str
    chunks: int
    updated_at: str


def read_meta(conn: sqlite3.Connection, name: str = "") -> dict[str, str]:
    """The manifest's meta rows; a file without them (an older kbqa's write racing a delete left
    such empty files) is named as a broken base that `kbqa kb remove` can delete."""
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        raise KnowledgeBaseError(
            f"knowledge base {name!r} has an empty manifest and holds nothing readable; delete it "
            f"with `kbqa kb remove --kb {name} --yes` and ingest again") from None


def check_meta(meta: dict[str, str], name: str, embeddings: EncoderEmbeddings) -> None:
    """Refuse a base of another schema version or built by another embedder, saying which."""
    if int(meta.get("schema_version", -1)) != manifest.SCHEMA_VERSION:
        raise KnowledgeBaseError(
            f"knowledge base {name!r} has schema version {meta.get('schema_version')}; "
            f"this kbqa reads version {manifest.SCHEMA_VERSION}")
    stored = (meta["embedder"], int(meta["dimension"]))
    given = (embeddings.name, embeddings.dimension)
    if stored != given:
        raise KnowledgeBaseError(
            f"knowledge base {name!r} was built with embedder {stored[0]} ({stored[1]}-d) "
            f"but was opened with {given[0]} ({given[1]}-d); open it with the original embedder "
            "or re-create it")


def chunk_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])


def documents(conn: sqlite3.Connection) -> list[DocumentRecord]:
    """The source files, sorted by path, with their chunk counts."""
    rows = conn.execute(
        "SELECT d.source, d.filename, d.sha256, count(c.id), d.updated_at FROM documents d "
        "LEFT JOIN chunks c ON c.document_id = d.id GROUP BY d.id ORDER BY d.source").fetchall()
    return [DocumentRecord(*row) for row in rows]


def chunk_texts(conn: sqlite3.Connection) -> tuple[int, list[int], list[str]]:
    """(generation, chunk ids, texts) read in one snapshot, for building lexical indexes."""
    conn.execute("BEGIN")
    try:
        generation = manifest.generation_of(conn)
        rows = conn.execute("SELECT id, text FROM chunks ORDER BY id").fetchall()
    finally:
        conn.execute("COMMIT")
    return generation, [row[0] for row in rows], [row[1] for row in rows]


def lexical_rows(conn: sqlite3.Connection,
                 after_id: int) -> tuple[int, np.ndarray, list[LexicalRow]]:
    """(generation, every chunk id ascending, BM25 rows of chunks with id > `after_id`), read in
    one snapshot. Rowids only grow, so a reader that has seen ids up to `after_id` gets exactly
    what is new; ids it knows that are no longer listed were deleted.

    A row is (chunk id, length, terms blob, counts blob, text); text is None unless the chunk
    has no stored counts of this tokenizer (a base not written since the BM25 table was
    added, or by an older kbqa): then the terms blob is None and the reader counts the text
    (kbqa.kb.lexical.searchable_text: its file name and its text).
    """
    conn.execute("BEGIN")
    try:
        generation = manifest.generation_of(conn)
        ids = np.fromiter((row[0] for row in conn.execute("SELECT id FROM chunks ORDER BY id")),
                          dtype=np.int64)
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'bm25_terms'").fetchone()
        # rows of another tokenizer (or a base written before the `tokenizer` column) come as
        # text only, to be counted again by the reader
        fresh = ("t.tokenizer = ?" if has_table and manifest.has_tokenizer_column(conn)
                 else "0 AND ?")
        query = (f"SELECT c.id, t.length, CASE WHEN {fresh} THEN t.terms END, t.counts, "
                 f"CASE WHEN t.chunk_id IS NULL OR NOT ({fresh}) THEN c.text END, c.metadata "
                 "FROM chunks c LEFT JOIN bm25_terms t ON t.chunk_id = c.id "
                 "WHERE c.id > ? ORDER BY c.id"
                 if has_table else
                 "SELECT id, NULL, NULL, NULL, text, metadata FROM chunks WHERE id > ? ORDER BY id")
        params = (TOKENIZER_VERSION, TOKENIZER_VERSION, after_id) if has_table else (after_id,)
        rows = [(chunk_id, length, terms, counts,
                 None if text is None else searchable_text(text, manifest.chunk_fields(raw)))
                for chunk_id, length, terms, counts, text, raw in conn.execute(query, params)]
    finally:
        conn.execute("COMMIT")
    return generation, ids, rows


def get_chunks(conn: sqlite3.Connection, chunk_ids: Sequence[int]) -> dict[int, Document]:
    """Chunks by rowid; ids that no longer exist are simply absent from the result."""
    found: dict[int, Document] = {}
    unique = list(dict.fromkeys(int(i) for i in chunk_ids))
    for start in range(0, len(unique), manifest.SQL_BATCH):
        batch = unique[start:start + manifest.SQL_BATCH]
        marks = ",".join("?" * len(batch))
        rows = conn.execute(f"SELECT id, key, text, metadata FROM chunks WHERE id IN ({marks})",
                            batch)
        for chunk_id, key, text, metadata in rows:
            found[chunk_id] = manifest.to_document(chunk_id, key, text, metadata)
    return found


def document_chunks(conn: sqlite3.Connection, source: str) -> list[Document]:
    """One document's chunks in the order it was split into them (a chunk viewer reads them)."""
    rows = conn.execute(
        "SELECT c.id, c.key, c.text, c.metadata FROM chunks c JOIN documents d "
        "ON c.document_id = d.id WHERE d.source = ? ORDER BY c.id", (source,)).fetchall()
    return [manifest.to_document(*row) for row in rows]


def texts_by_id(conn: sqlite3.Connection,
                chunk_ids: list[int] | None) -> list[tuple[int, str]]:
    """(id, text) of the given chunks (None: all) that the manifest has, ascending by id."""
    if chunk_ids is None:
        return conn.execute("SELECT id, text FROM chunks ORDER BY id").fetchall()
    rows: list[tuple[int, str]] = []
    for start in range(0, len(chunk_ids), manifest.SQL_BATCH):
        batch = chunk_ids[start:start + manifest.SQL_BATCH]
        marks = ",".join("?" * len(batch))
        rows += conn.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks}) ORDER BY id",
                             batch).fetchall()
    return rows
