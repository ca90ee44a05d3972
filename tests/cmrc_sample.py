"""A few real CMRC 2018 dev questions and their documents, written as eval inputs."""

from __future__ import annotations

import json
from pathlib import Path

CMRC_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval" / "cmrc2018" / "dev"


def cmrc_sample(folder: Path, count: int) -> tuple[Path, Path]:
    """questions.jsonl with the first `count` dev questions; docs.jsonl with their documents
    plus six others (so retrieval has something to get wrong)."""
    rows = [json.loads(line) for line in
            (CMRC_DEV / "questions.jsonl").read_text(encoding="utf-8").splitlines()][:count]
    wanted = {row["doc_id"] for row in rows}
    lines = (CMRC_DEV / "docs.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [line for line in lines if json.loads(line)["doc_id"] in wanted]
    others = [line for line in lines if json.loads(line)["doc_id"] not in wanted][:6]
    folder.mkdir(parents=True, exist_ok=True)
    questions, doc_file = folder / "questions.jsonl", folder / "docs.jsonl"
    questions.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                         encoding="utf-8")
    doc_file.write_text("\n".join(docs + others) + "\n", encoding="utf-8")
    return questions, doc_file
