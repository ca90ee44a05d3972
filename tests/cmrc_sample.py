"""A few real CMRC 2018 dev questions and their documents (tests/data/cmrc2018-sample, CC BY-SA 4.0)."""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "data" / "cmrc2018-sample"


def cmrc_sample(folder: Path, count: int) -> tuple[Path, Path]:
    """questions.jsonl with the first `count` (≤ 4) sample questions, and docs.jsonl with their
    passages plus six others, copied into `folder`."""
    lines = (SAMPLE / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    if count > len(lines):
        raise ValueError(f"the sample holds {len(lines)} questions, not {count}")
    folder.mkdir(parents=True, exist_ok=True)
    questions, docs = folder / "questions.jsonl", folder / "docs.jsonl"
    questions.write_text("\n".join(lines[:count]) + "\n", encoding="utf-8")
    shutil.copy(SAMPLE / "docs.jsonl", docs)
    return questions, docs
