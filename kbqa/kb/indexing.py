"""Files into a knowledge base: ingest, sync and remove as functions over a KnowledgeBase, each
returning what happened per file (the pipeline: hash, parse, split, embed with the cache, write
in one transaction)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.documents import Document
from tqdm.auto import tqdm

from kbqa.errors import KnowledgeBaseError, LoaderError
from kbqa.kb import embedding_cache, manifest
from kbqa.kb.results import IngestResult, IngestStats, IngestStatus
from kbqa.vector_backends import VectorDelta

if TYPE_CHECKING:
    from kbqa.ingest.ocr import PageProgress
    from kbqa.kb.base import KnowledgeBaseFolder

@dataclass
class PreparedFile:
    """A parsed and split file waiting to be written in the batch's transaction."""

    path: Path
    source: str
    sha256: str
    chunks: list[Document]
    previous_id: int | None
    vectors: np.ndarray | None = None


def ingest(kb: KnowledgeBaseFolder, paths: Iterable[Path | str], *, progress: bool = False,
           on_page: PageProgress | None = None) -> list[IngestResult]:
    """Add new files, replace changed ones, skip unchanged ones (by sha256 of the bytes).

    Folders are recursed (hidden entries and unsupported extensions skipped). A file that
    fails is reported as "failed" and the rest of the batch goes on; what was stored before
    is kept. All successful files are committed together in one transaction. `on_page(done,
    total)` is called after each page of a PDF or image as it is read.
    """
    files, missing = expand_paths(paths)
    with kb.writer(refresh=True) as conn:
        results, prepared, stats = _prepare(kb, conn, files, progress, on_page)
        _write_files(kb, conn, prepared, [], progress, stats)
    return results + missing


def sync(kb: KnowledgeBaseFolder, folder: Path | str, *, progress: bool = False) -> list[IngestResult]:
    """Make the knowledge base mirror `folder`: ingest it and purge its files that are gone."""
    folder = Path(folder).expanduser().resolve()
    files, missing = expand_paths([folder]) if folder.is_dir() else ([], [])
    with kb.writer(refresh=True) as conn:
        results, prepared, stats = _prepare(kb, conn, files, progress)
        gone = [(doc_id, source) for doc_id, source in
                conn.execute("SELECT id, source FROM documents").fetchall()
                if Path(source).is_relative_to(folder) and not Path(source).exists()]
        counts = manifest.chunk_counts(conn, [doc_id for doc_id, _ in gone])
        _write_files(kb, conn, prepared, [doc_id for doc_id, _ in gone], progress, stats)
    removed = [IngestResult(Path(source), "removed", chunks=counts.get(doc_id, 0))
               for doc_id, source in gone]
    return results + missing + removed


def remove(kb: KnowledgeBaseFolder, source: Path | str) -> int:
    """Remove one source file's chunks; returns how many. Raises if it is not in the base."""
    candidates = [str(Path(source).expanduser().resolve()), str(source)]
    with kb.writer(refresh=True) as conn:
        row = None
        for candidate in candidates:
            row = conn.execute("SELECT id FROM documents WHERE source = ?",
                               (candidate,)).fetchone()
            if row:
                break
        if row is None:
            raise KnowledgeBaseError(f"{source} is not in knowledge base {kb.name!r}")
        count = manifest.chunk_counts(conn, [row[0]]).get(row[0], 0)
        _write_files(kb, conn, [], [row[0]], False, IngestStats())
    return count


def _prepare(kb: KnowledgeBaseFolder, conn: sqlite3.Connection, files: list[Path],
             progress: bool, on_page: PageProgress | None = None
             ) -> tuple[list[IngestResult], list[PreparedFile], IngestStats]:
    """Hash, parse and split each file; nothing is written yet. Starts `last_ingest_stats`."""
    from kbqa.ingest import ChineseTextSplitter

    stats = IngestStats(files=len(files))
    kb.last_ingest_stats = stats
    splitter = ChineseTextSplitter(chunk_size=kb.chunk_size, chunk_overlap=kb.chunk_overlap)
    known = {source: (doc_id, sha) for doc_id, source, sha in
             conn.execute("SELECT id, source, sha256 FROM documents").fetchall()}
    results: list[IngestResult] = []
    prepared: list[PreparedFile] = []
    for path in tqdm(files, desc="reading", unit="file", disable=not progress):
        source = str(path.resolve())
        previous = known.get(source)
        try:
            digest = file_sha256(path)
            if previous and previous[1] == digest:
                count = manifest.chunk_counts(conn, [previous[0]]).get(previous[0], 0)
                results.append(IngestResult(path, "skipped", chunks=count))
                continue
            chunks = _parse_and_split(path, splitter, stats, progress, on_page)
        # Loaders wrap third-party parsers that raise anything; one bad file must not end the batch.
        except Exception as exc:  # noqa: BLE001
            results.append(IngestResult(path, "failed", error=describe(path, exc)))
            continue
        status: IngestStatus = "updated" if previous else "added"
        prepared.append(PreparedFile(path, source, digest, chunks,
                                      previous[0] if previous else None))
        results.append(IngestResult(path, status, chunks=len(chunks)))
    return results, prepared, stats


def _parse_and_split(path: Path, splitter: Any, stats: IngestStats, progress: bool = False,
                     on_page: PageProgress | None = None) -> list[Document]:
    from kbqa.ingest import load_file, split_elements

    started = time.perf_counter()
    pages = _PageBar(path.name) if progress else None

    def page_done(done: int, total: int) -> None:
        if pages:
            pages(done, total)
        if on_page:
            on_page(done, total)

    try:
        elements = load_file(path, on_page=page_done if pages or on_page else None)
    finally:
        if pages:
            pages.close()
    parsed = time.perf_counter()
    chunks = split_elements(elements, splitter)
    stats.parse_s += parsed - started
    stats.split_s += time.perf_counter() - parsed
    if not any(chunk.page_content.strip() for chunk in chunks):
        raise LoaderError(f"{path.name}: no text to index")
    return [chunk for chunk in chunks if chunk.page_content.strip()]


class _PageBar:
    """A bar over one PDF's or image's pages (OCR takes seconds a page), opened at its first page."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.name, unit="page", leave=False)
        self.bar.update(done - self.bar.n)
        if done == total:  # pages OCR'd side by side end close together: show the last one
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_files(kb: KnowledgeBaseFolder, conn: sqlite3.Connection, prepared: list[PreparedFile],
                 removals: list[int], progress: bool, stats: IngestStats) -> None:
    """Embed the prepared files' chunks, then write them and the removals in one transaction."""
    if not prepared and not removals:
        return
    texts = [chunk.page_content for item in prepared for chunk in item.chunks]
    started = time.perf_counter()
    vectors, cached = embedding_cache.embed_texts(conn, kb.embeddings, texts, progress)
    stats.embed_s += time.perf_counter() - started
    stats.chunks += len(texts)
    stats.cached += cached
    stats.embedded += len(texts) - cached
    offset = 0
    for item in prepared:
        item.vectors = vectors[offset:offset + len(item.chunks)]
        offset += len(item.chunks)

    def change(tx: sqlite3.Connection) -> VectorDelta:
        delta = VectorDelta()
        stale = removals + [item.previous_id for item in prepared if item.previous_id]
        delta.removed = manifest.delete_documents(tx, stale, keep_rows=[
            item.previous_id for item in prepared if item.previous_id])
        for item in prepared:
            ids = upsert_document(tx, item)
            delta.added_ids.extend(ids)
            delta.added_vectors.append(item.vectors)
        return delta

    timings = kb.transact(conn, change)
    stats.index_s += timings.index_s
    stats.commit_s += timings.commit_s


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def is_hidden(path: Path, base: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def expand_paths(paths: Iterable[Path | str]) -> tuple[list[Path], list[IngestResult]]:
    """Files to ingest (folders recursed, hidden and unsupported files skipped), plus missing paths."""
    # kbqa.ingest is imported only by writers: it pulls in the parsers, which a reader never needs.
    from kbqa.ingest import SUPPORTED_SUFFIXES

    files: dict[str, Path] = {}
    missing: list[IngestResult] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if (child.is_file() and child.suffix.lower() in SUPPORTED_SUFFIXES
                        and not is_hidden(child, path)):
                    files.setdefault(str(child.resolve()), child)
        elif path.is_file():
            files.setdefault(str(path.resolve()), path)
        else:
            missing.append(IngestResult(path, "failed", error=f"{path}: no such file or folder"))
    return list(files.values()), missing


def chunk_metadata(chunk: Document, source: str, filename: str, index: int) -> dict[str, Any]:
    metadata = dict(chunk.metadata)
    metadata.update(source=source, filename=filename)
    metadata.setdefault("chunk_index", index)
    return metadata


def describe(path: Path, exc: Exception) -> str:
    message = str(exc) or type(exc).__name__
    return message if path.name in message else f"{path.name}: {message}"


def upsert_document(conn: sqlite3.Connection, item: PreparedFile) -> list[int]:
    """Write the document row and its chunks; returns the new chunk ids in order."""
    filename = item.path.name
    if item.previous_id is None:
        doc_id = conn.execute(
            "INSERT INTO documents (source, filename, sha256, updated_at) VALUES (?, ?, ?, ?)",
            (item.source, filename, item.sha256, manifest.now())).lastrowid
    else:
        doc_id = item.previous_id
        conn.execute("UPDATE documents SET filename = ?, sha256 = ?, updated_at = ? WHERE id = ?",
                     (filename, item.sha256, manifest.now(), doc_id))
    return [manifest.insert_chunk(conn, f"{item.source}#{position}", doc_id, chunk.page_content,
                          chunk_metadata(chunk, item.source, filename, position))
            for position, chunk in enumerate(item.chunks)]
