"""Documents given as JSON Lines (doc_id, title, text), as evaluation sets ship them, turned into files to ingest."""

from __future__ import annotations

import json
from pathlib import Path

from kbqa.errors import KbqaError


def materialise_docs(docs: Path, folder: Path) -> tuple[Path, list[str]]:
    """A folder of files to ingest: `docs` itself, or docs.jsonl written out as <doc_id>.txt."""
    if docs.is_dir():
        return docs, []
    if docs.suffix != ".jsonl" or not docs.is_file():
        raise KbqaError(f"--docs {docs}: give a folder of documents or a docs.jsonl file")
    folder.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for number, line in enumerate(docs.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            doc_id, text = str(row["doc_id"]), str(row["text"])
            if not doc_id or "/" in doc_id or doc_id.startswith("."):
                raise ValueError(f"unsafe doc_id {doc_id!r}")
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{docs.name}:{number}: skipped: {exc}")
            continue
        target = folder / f"{doc_id}.txt"
        content = f"{row.get('title', '')}\n\n{text}".strip()
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            target.write_text(content, encoding="utf-8")
    return folder, problems
