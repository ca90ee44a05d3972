"""The knowledge base: SQLite manifest and vectors, incremental ingest, BM25 terms, uploaded files."""
