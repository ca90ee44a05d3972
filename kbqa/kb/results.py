"""What an ingest reports: per file, what happened; per run, where the time went."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

IngestStatus = Literal["added", "updated", "skipped", "removed", "failed"]


@dataclass(frozen=True)
class IngestResult:
    """What happened to one file in an ingest or sync."""

    path: Path
    status: IngestStatus
    chunks: int = 0
    error: str | None = None


@dataclass
class IngestStats:
    """Where the last ingest spent its time; for benchmarks and CLI summaries."""

    files: int = 0
    chunks: int = 0
    embedded: int = 0
    cached: int = 0
    parse_s: float = 0.0
    split_s: float = 0.0
    embed_s: float = 0.0
    index_s: float = 0.0  # staging the vector changes (FAISS: building and writing the index file)
    commit_s: float = 0.0  # SQL writes of chunks, BM25 term counts and manifest, and the commit
