"""`kbqa eval`: arguments and the command's output."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Ask the same questions through several model variants over one knowledge base, score them
(CMRC-style EM/F1, character ROUGE-L, retrieval hit@k/MRR, refusal rate with the gold document
hidden) and compare each variant with the plain model (paired bootstrap CIs, McNemar).
Writes OUT/answers.jsonl, metrics.json, report.md and report.html. Rerunning with the same
OUT resumes where it stopped.

example:
  kbqa eval --llm embedded:qwen2.5-coder-0.5b-instruct --questions dev/questions.jsonl \\
            --docs dev/docs.jsonl --variant plain --variant cmrc=adapters/qwen0.5b-cmrc-direct \\
            --out eval-out --limit 20
"""


def add_eval_parser(commands: Any, add_common: Any, add_model_options: Any) -> None:
    parser = commands.add_parser("eval", help="compare model variants on a question set",
                                 description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, required=True,
                        help='JSONL: {"qid", "question", "answers": [...], "doc_id"?}')
    parser.add_argument("--docs", type=Path, action="append", required=True,
                        help='a folder of documents, or docs.jsonl: {"doc_id", "title", "text"}; '
                             "repeat to combine several")
    parser.add_argument("--variant", dest="variants", action="append", default=[],
                        metavar="SPEC", help="'plain', 'default' (kbqa's default reader, compared "
                             "on its base model) or NAME=ADAPTER_DIR[+ADAPTER_DIR]; repeat")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--retrieval-only", action="store_true",
                        help="retrieval metrics only, no generation")
    add_common(parser)
    add_model_options(parser)


def run_eval_command(args: argparse.Namespace, settings: Any) -> int:
    from kbqa.evaluation import EvalConfig, parse_variant, run_eval
    from kbqa.evaluation.report import comparison_table, metrics_table

    variants = tuple(parse_variant(spec) for spec in (args.variants or ["plain"]))
    config = EvalConfig(questions=args.questions, docs=tuple(args.docs), variants=variants, out=args.out,
                        limit=args.limit, retrieval_only=args.retrieval_only)
    metrics = run_eval(settings, config)
    for table in (metrics_table(metrics, variants), comparison_table(metrics)):
        if len(table) > 1:
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            for row in table:
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
            print()
    print(f"report: {args.out / 'report.html'}")
    return 0
