"""Time to first token with and without the prefix key/value cache (kbqa.llm.prefix_cache).

Asks CMRC 2018 dev questions in file order, which groups them by article (3–5 questions on
one passage, like a user's follow-ups), through `KbqaService.ask` on the dev + train KB with
the default model: once with the prefix cache off, once on, back to back in one process,
then the first question of each group asked again (a repeated question). Prints TTFT p50 and
mean, the share of prompt tokens taken from the cache, and how many answers differ.

    python bench/cmrc_dev.py --home /tmp/cmrc-home --retrieval-only   # builds the KB once
    python bench/prefix_reuse.py --home /tmp/cmrc-home --limit 60

Needs an otherwise idle machine. Writes bench/results/prefix_reuse.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from machine_facts import with_machine
from kbqa.config import load_settings
from kbqa.llm.prefix_cache import PrefixCache
from kbqa.service import KbqaService

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "cmrc2018"
RESULTS = Path(__file__).resolve().parent / "results"


def run(service: KbqaService, questions: list[str], label: str) -> list[dict]:
    rows = []
    for number, question in enumerate(questions, start=1):
        answer = service.ask(question)
        rows.append({"question": question, "answer": answer.text,
                     "ttft_s": answer.timings.get("first_token", answer.timings["total"]),
                     "prompt_tokens": answer.usage.get("prompt_tokens", 0)})
        print(f"[{label} {number}/{len(questions)}] ttft {rows[-1]['ttft_s']:.2f}s {question}",
              file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict], cache: PrefixCache | None) -> dict:
    ttft = [r["ttft_s"] for r in rows]
    out = {"n": len(rows), "ttft_p50_s": statistics.median(ttft), "ttft_mean_s": statistics.fmean(ttft),
           "prompt_tokens_mean": statistics.fmean(r["prompt_tokens"] for r in rows)}
    if cache is not None:
        total = cache.reused_tokens + cache.computed_tokens
        out["reused_share"] = cache.reused_tokens / max(total, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True,
                        help="KBQA home holding the CMRC KB 'cmrc' (bench/cmrc_dev.py builds it)")
    parser.add_argument("--limit", type=int, default=60, help="first N dev questions")
    parser.add_argument("--out", type=Path, default=RESULTS / "prefix_reuse.json")
    args = parser.parse_args()
    records = [json.loads(line) for line in
               (EVAL / "dev" / "questions.jsonl").read_text(encoding="utf-8").splitlines()][: args.limit]
    questions = [r["question"] for r in records]
    firsts = [r["question"] for r in records if r["qid"].endswith("_QUERY_0")]
    service = KbqaService(load_settings({"home": args.home, "kb": "cmrc"}, environ={}))
    if not service.knowledge_base().chunk_count:
        raise SystemExit("the KB is empty: run bench/cmrc_dev.py --home ... --retrieval-only first")
    llm = service.llm
    service.ask(questions[0])  # warm-up: model load, first kernels
    llm.prefix_cache = None
    off = run(service, questions, "off")
    cache = llm.prefix_cache = PrefixCache()
    on = run(service, questions, "on")
    llm.prefix_cache = None
    repeat_off = run(service, firsts, "repeat-off")
    llm.prefix_cache = cache
    repeated = []
    for question in firsts:  # ask, then ask the same again: the second reads the cache
        service.ask(question)
        repeated.extend(run(service, [question], "repeat-on"))
    result = {
        "follow_ups": {"off": summary(off, None), "on": summary(on, cache),
                       "answers_changed": sum(a["answer"] != b["answer"] for a, b in zip(off, on))},
        "repeated": {"off": summary(repeat_off, None),
                     "on": summary(repeated, None)},
        "loadavg_end": os.getloadavg(),
    }
    print(f"{'scenario':<22}{'TTFT p50 off':>13}{'on':>8}{'mean off':>10}{'on':>8}{'reused':>8}")
    for name, pair in (("follow-up questions", result["follow_ups"]),
                       ("repeated question", result["repeated"])):
        share = pair["on"].get("reused_share")
        print(f"{name:<22}{pair['off']['ttft_p50_s']:>12.2f}s{pair['on']['ttft_p50_s']:>7.2f}s"
              f"{pair['off']['ttft_mean_s']:>9.2f}s{pair['on']['ttft_mean_s']:>7.2f}s"
              f"{'' if share is None else f'{share:.0%}':>8}")
    print(f"answers that differ with the cache on (follow-ups): {result['follow_ups']['answers_changed']}"
          f" of {len(questions)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(with_machine({**result, "rows": {"off": off, "on": on}}), ensure_ascii=False,
                                   indent=1), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
