"""Read a `kbqa eval` report folder for display: metrics.json, answers.jsonl, report.html.

Nothing is recomputed here; the folder's files are read as written and turned into flat rows.
Missing or unreadable files are reported in `problems` instead of raising, so a UI can say what
is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbqa.evaluation.scoring import RESERVED_KEYS

METRICS = "metrics.json"
ANSWERS = "answers.jsonl"
REPORT_HTML = "report.html"


@dataclass(frozen=True)
class ReportProblem:
    """A missing or unreadable file of a report, told apart so a UI can say it in any language."""

    kind: str  # 'not_folder', 'unreadable', 'missing' or 'bad_lines'
    path: Path
    detail: str = ""  # the file missing, the read error, or the count of lines skipped

    def __str__(self) -> str:
        return {"not_folder": f"{self.path} is not a folder",
                "unreadable": f"{self.path} cannot be read: {self.detail}",
                "missing": f"{self.path} has no {self.detail}",
                "bad_lines": f"{self.path}: {self.detail} unreadable line(s) skipped"}[self.kind]


@dataclass
class EvalReport:
    folder: Path
    metrics: dict[str, Any] | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)
    html: str | None = None
    problems: list[ReportProblem] = field(default_factory=list)

    @property
    def variants(self) -> list[str]:
        names = [k for k, v in (self.metrics or {}).items()
                 if k not in RESERVED_KEYS and isinstance(v, dict)]
        for row in self.answers:
            if row.get("variant") and row["variant"] not in names:
                names.append(row["variant"])
        return names

    def metric_rows(self) -> list[dict[str, Any]]:
        """One flat row per variant: n, retrieval.*, answer.* (as in metrics.json)."""
        rows = []
        for name in self.variants:
            m = (self.metrics or {}).get(name)
            if not isinstance(m, dict):
                continue
            row: dict[str, Any] = {"variant": name, "n": m.get("n")}
            for group in ("retrieval", "answer"):
                for key, value in (m.get(group) or {}).items():
                    if isinstance(value, (int, float)) or value is None:
                        row[key if group == "answer" else f"retrieval {key}"] = value
            rows.append(row)
        return rows

    def side_by_side(self, kind: str = "answerable") -> list[dict[str, Any]]:
        """One row per question (qid), one column per variant's answer."""
        by_qid: dict[str, dict[str, Any]] = {}
        for row in self.answers:
            if row.get("kind", "answerable") != kind or "qid" not in row:
                continue
            entry = by_qid.setdefault(str(row["qid"]), {"qid": str(row["qid"])})
            if row.get("question") and "question" not in entry:
                entry["question"] = row["question"]
            entry[str(row.get("variant", "?"))] = row.get("answer", "")
        return list(by_qid.values())


def read_eval_report(folder: Path | str) -> EvalReport:
    folder = Path(folder).expanduser()
    report = EvalReport(folder=folder)
    if not folder.is_dir():
        report.problems.append(ReportProblem("not_folder", folder))
        return report
    metrics_path = folder / METRICS
    if metrics_path.is_file():
        try:
            data = json.loads(metrics_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            report.metrics = data
        except (OSError, ValueError, TypeError) as exc:
            report.problems.append(ReportProblem("unreadable", metrics_path, str(exc)))
    else:
        report.problems.append(ReportProblem("missing", folder, METRICS))
    answers_path = folder / ANSWERS
    if answers_path.is_file():
        bad = 0
        for line in answers_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict):
                report.answers.append(row)
        if bad:
            report.problems.append(ReportProblem("bad_lines", answers_path, str(bad)))
    else:
        report.problems.append(ReportProblem("missing", folder, ANSWERS))
    html_path = folder / REPORT_HTML
    if html_path.is_file():
        report.html = html_path.read_text(encoding="utf-8", errors="replace")
    else:
        report.problems.append(ReportProblem("missing", folder, REPORT_HTML))
    return report
