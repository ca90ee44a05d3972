"""CMRC 2018 train without the questions the answerability probe is fitted on: the data the
default reader's second adapter (`adapters/qwen0.5b-reader-rag`) was trained on.

    python bench/reader_training_split.py --out /tmp/cmrc-train-noprobe

The probe (kbqa.llm.answerability) must see hidden states of prompts the reader did not learn,
so its first `--held-out` train questions in `refusal_calibration.asked_questions` order (the
ones `answerability_features.py --questions-from train` reads) are left out. Writes OUT/docs.jsonl
(all train passages) and OUT/questions.jsonl (the rest, in the original order).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from cmrc_dev import EVAL, _jsonl
from refusal_calibration import asked_questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-dir", type=Path, default=EVAL)
    parser.add_argument("--held-out", type=int, default=300,
                        help="questions kept for the probe (default 300, as §16 fits it)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    held_out = {q["qid"] for q in asked_questions(args.eval_dir, "train")[:args.held_out]}
    questions = _jsonl(args.eval_dir / "train" / "questions.jsonl")
    kept = [q for q in questions if q["qid"] not in held_out]
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.eval_dir / "train" / "docs.jsonl", args.out / "docs.jsonl")
    (args.out / "questions.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in kept), encoding="utf-8")
    print(f"{len(kept)} of {len(questions)} train questions → {args.out} "
          f"({len(held_out)} held out for the probe)")


if __name__ == "__main__":
    main()
