"""The grounding policies side by side, on the answers one benchmark run already recorded.

    python bench/grounding_tradeoff.py --company bench/reports/company-docs/default.json \\
        --cmrc bench/results/cmrc_dev_embedded_bm25_grounding-off.json

The grounding step (kbqa.qa.grounding.ground) is a deterministic function of the model's draft, the
passages it was given and the question, and both reports keep all three per question (a run with
grounding off: the draft is the answer). So each policy, and each support threshold, is applied
here exactly as the chain would apply it, without generating again. Prints one table per set:
answerable right (company docs) or EM/F1 (CMRC), answerable refused, unanswerable refused (CMRC:
the gold passage hidden). Writes the table as JSON next to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from company_docs import is_right
from machine_facts import with_machine

from kbqa.evaluation.metrics import exact_match, f1_score
from kbqa.qa.chain import is_refusal
from kbqa.qa.grounding import MIN_COVERAGE, ground

THRESHOLDS = (0.6, 0.7, MIN_COVERAGE, 0.9, 1.0)


def _draft(row: dict[str, Any]) -> str:
    grounding = row.get("grounding")
    if isinstance(grounding, dict):
        return grounding["draft"].strip()
    return (row.get("draft") or row.get("answer") or row.get("prediction") or "").strip()


def _variants() -> list[tuple[str, str, float]]:
    return [("off", "off", MIN_COVERAGE)] + [
        (f"{policy} @{threshold}", policy, threshold)
        for policy in ("span", "refuse") for threshold in THRESHOLDS]


def company(report: dict[str, Any]) -> list[dict[str, Any]]:
    table = []
    for label, policy, threshold in _variants():
        right = refused_a = refused_u = changed = 0
        answerable = [r for r in report["rows"] if r["answerable"]]
        missing = [r for r in report["rows"] if not r["answerable"]]
        for row in report["rows"]:
            text = ground(_draft(row), row["passages"], row["question"], policy, threshold).text
            changed += text != _draft(row)
            refused = is_refusal(text)
            if row["answerable"]:
                refused_a += refused
                right += not refused and is_right(text, row["answers"])
            else:
                refused_u += refused
        table.append({"variant": label, "answerable_right": round(right / len(answerable), 3),
                      "answerable_refused": round(refused_a / len(answerable), 3),
                      "unanswerable_refused": round(refused_u / len(missing), 3),
                      "answers_changed": changed})
    return table


def cmrc(report: dict[str, Any]) -> list[dict[str, Any]]:
    table = []
    for label, policy, threshold in _variants():
        em, f1, refused = [], [], []
        for row in report["rows"]:
            text = ground(_draft(row), row["passages"], row["question"], policy, threshold).text
            em.append(exact_match(text, row["answers"]))
            f1.append(f1_score(text, row["answers"]))
            refused.append(is_refusal(text))
        hidden = [is_refusal(ground(_draft(r), r["passages"], r["question"], policy, threshold).text)
                  for r in report.get("unanswerable_rows", [])]
        table.append({"variant": label, "n": len(em), "em": round(statistics.fmean(em), 3),
                      "f1": round(statistics.fmean(f1), 3),
                      "answerable_refused": round(statistics.fmean(refused), 3),
                      "gold_hidden_refused": round(statistics.fmean(hidden), 3) if hidden else None})
    return table


def _print(title: str, table: list[dict[str, Any]]) -> None:
    keys = list(table[0])
    print(f"\n{title}\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in table:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--company", type=Path, help="a bench/company_docs.py report")
    parser.add_argument("--cmrc", type=Path, help="a bench/cmrc_dev.py report (with --unanswerable)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "reports" / "grounding-tradeoff.json")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    for name, path, score in (("company_docs", args.company, company), ("cmrc_dev", args.cmrc, cmrc)):
        if path is not None:
            result[name] = {"report": str(path),
                            "table": score(json.loads(path.read_text(encoding="utf-8")))}
            _print(f"{name} ({path})", result[name]["table"])
    if not result:
        parser.error("give --company and/or --cmrc")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(with_machine(result), ensure_ascii=False, indent=1),
                        encoding="utf-8")


if __name__ == "__main__":
    main()
