"""Start `kbqa eval` in a child process and follow its progress (what the web UI's button does).

A child process keeps the evaluation's own model copy away from the one the web app serves
with, and a crash or a long run never blocks other sessions. Progress is read back from the
run's answers.jsonl, which the evaluator appends to as it goes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kbqa.evaluation.data import read_questions

LOG = "eval.log"


def variant_name(label: str) -> str:
    """A --variant NAME from a display label: letters, digits, '.', '-' and '_' only."""
    return re.sub(r"[^\w.-]+", "_", label).strip("_") or "variant"


@dataclass
class EvalProcess:
    """A running `kbqa eval`; `done()` answers are written out of `total`."""

    process: subprocess.Popen
    out: Path
    total: int

    def done(self) -> int:
        path = self.out / "answers.jsonl"
        if not path.is_file():
            return 0
        with path.open("rb") as handle:
            return sum(1 for _ in handle)

    def finished(self) -> bool:
        return self.process.poll() is not None

    def log_tail(self, lines: int = 15) -> str:
        path = self.out / LOG
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def start_eval(questions: Path, docs: Path, adapter_variants: dict[str, list[Path]], out: Path,
               limit: int | None = None) -> EvalProcess:
    """Launch `kbqa eval` (plain + the given variants); raises KbqaError for a bad questions file."""
    found, _ = read_questions(questions)
    found = found[:limit]
    kinds = len(found) + sum(1 for q in found if q.doc_id)  # answerable + gold-hidden
    command = [sys.executable, "-m", "kbqa.cli", "eval", "--questions", str(questions),
               "--docs", str(docs), "--out", str(out), "--variant", "plain"]
    for name, folders in adapter_variants.items():
        command += ["--variant", f"{variant_name(name)}={'+'.join(str(f) for f in folders)}"]
    if limit:
        command += ["--limit", str(limit)]
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOG).open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    return EvalProcess(process, out, kinds * (1 + len(adapter_variants)))
