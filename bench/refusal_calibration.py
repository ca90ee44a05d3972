"""The refusal trade-off curve on CMRC dev: answerable questions refused against questions
refused with their gold passage hidden, for each refusal bias (kbqa.llm.refusal), per model.

    python bench/refusal_calibration.py --home /tmp/cmrc-home --offset 0 --limit 100 \\
        --llm embedded:qwen2.5-coder-0.5b-instruct --variant plain --variant direct=adapters/qwen0.5b-cmrc-direct
    python bench/refusal_calibration.py --home /tmp/cmrc-home --offset 100 --limit 102 --variant default

Each question is asked twice, as `kbqa eval` asks it: with the passages retrieval finds, and with
the gold document's passages removed. The prompt, the greedy draft and the grounding step are the
chain's (kbqa.qa.chain). The model's first step is recorded with the threshold off: the margin
by which its best token beats the refusal's first token, and the probability it gives that
token. A threshold refuses exactly the answers on one side of it and changes no other (the
refusal is then written out whole), so every threshold is applied to the recorded rows without
generating again. Writes one JSON (rows and curves per variant) to --out; --curves-of recomputes
the curves of such a file.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

from cmrc_dev import EVAL, _doc_id, _jsonl, build_kb
from machine_facts import with_machine

from kbqa.adapters.variants import Variant as ModelVariant
from kbqa.config import load_settings
from kbqa.evaluation.metrics import exact_match, f1_score
from kbqa.qa.chain import check_answer, is_refusal
from kbqa.qa.prompts import REFUSAL, build_prompt, format_context
from kbqa.service import KbqaService

RULES = {"margin": (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0),
         "probability": (1.0, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002, 0.001)}


def contexts(service: KbqaService, question: dict) -> dict[str, list]:
    """The passages of both askings, as kbqa eval retrieves them (one wide search)."""
    top_k = service.settings.retrieval.top_k
    wide = service.retriever(top_k=max(5, top_k) + 10).invoke(question["question"])
    hidden = [d for d in wide if _doc_id(d) != question["doc_id"]][:top_k]
    return {"answerable": wide[:top_k], "unanswerable": hidden}


def answer(llm, settings, question: str, docs: list) -> dict:
    """The chain's answer with its first-token refusal margin (None when retrieval refused)."""
    if not docs:
        return {"draft": REFUSAL, "answer": REFUSAL, "margin": None, "logprob": None}
    prompt = build_prompt(settings.answer.prompt_template).format(
        context=format_context(docs), question=question, history="")
    generation = llm.generate([prompt]).generations[0][0]
    draft = generation.text.strip()
    grounded = check_answer(draft, docs, question, settings.answer.grounding)
    info = generation.generation_info or {}
    return {"draft": draft, "answer": grounded.text, "margin": info.get("refusal_margin"),
            "logprob": info.get("refusal_logprob")}


def asked_questions(eval_dir: Path, split: str) -> list[dict]:
    """Dev in its order; or train shuffled (seed 1) without the 120 questions the default
    reader's adapter was trained on (kbqa.adapters.train.cmrc_examples, seed 0, its --steps)."""
    questions = _jsonl(eval_dir / split / "questions.jsonl")
    if split == "dev":
        return questions
    from kbqa.adapters.train import cmrc_examples

    trained = "\n".join(e.prompt for e in cmrc_examples(eval_dir / "train", limit=120))
    questions = [q for q in questions if f"问题：{q['question']}" not in trained]
    random.Random(1).shuffle(questions)
    return questions


def refuses(row: dict, rule: str, value: float) -> bool:
    """Whether a recorded answer becomes the refusal under a rule: 'margin' refuses when the best
    answer token beats the refusal's first token by less than `value` logits (the refusal_bias
    setting); 'probability' when the model gives its refusal's first token at least `value`."""
    if row["margin"] is None:
        return True  # retrieval refused: no model call
    if rule == "margin":
        return value > 0 and row["margin"] < value
    return value < 1 and math.exp(row["logprob"]) >= value


def at(row: dict, rule: str, value: float) -> str:
    """The answer the chain gives under this rule and value."""
    return REFUSAL if refuses(row, rule, value) else row["answer"]


def curve(rows: list[dict], questions: dict[str, dict], rule: str,
          values: tuple[float, ...]) -> list[dict]:
    answerable = [r for r in rows if r["kind"] == "answerable"]
    hidden = [r for r in rows if r["kind"] == "unanswerable"]
    points = []
    for value in values:
        given = [(at(r, rule, value), questions[r["qid"]]["answers"]) for r in answerable]
        points.append({
            rule: value,
            "em": statistics.fmean(exact_match(a, gold) for a, gold in given),
            "f1": statistics.fmean(f1_score(a, gold) for a, gold in given),
            "answerable_refused": statistics.fmean(is_refusal(a) for a, _ in given),
            "hidden_refused": statistics.fmean(is_refusal(at(r, rule, value)) for r in hidden)})
    return points


def print_curve(name: str, rule: str, points: list[dict]) -> None:
    print(f"\n{name}, by {rule}\n| {rule} | EM | F1 | answerable refused | hidden refused |"
          "\n|---|---|---|---|---|")
    for p in points:
        print(f"| {p[rule]:g} | {p['em']:.3f} | {p['f1']:.3f} | {p['answerable_refused']:.3f}"
              f" | {p['hidden_refused']:.3f} |", flush=True)


def recompute(path: Path, eval_dir: Path, service: KbqaService, split: int | None) -> None:
    """The curves of a written report from its recorded drafts, with the current grounding step
    applied again to the same passages (retrieval is deterministic; no model is loaded)."""
    report = json.loads(path.read_text(encoding="utf-8"))
    by_qid = {q["qid"]: q for q in asked_questions(eval_dir, report.get("questions_from", "dev"))}
    recorded = {row["qid"] for variant in report["variants"].values() for row in variant["rows"]}
    asked = {qid: contexts(service, by_qid[qid]) for qid in recorded}
    for name, variant in report["variants"].items():
        for row in variant["rows"]:
            if row["margin"] is not None:
                row["answer"] = check_answer(row["draft"], asked[row["qid"]][row["kind"]],
                                             by_qid[row["qid"]]["question"],
                                             service.settings.answer.grounding).text
        order = list(dict.fromkeys(row["qid"] for row in variant["rows"]))
        parts = {"all": order}
        if split:
            parts |= {f"first {split}": order[:split], f"after {split}": order[split:]}
        variant["curves"] = {}
        for part, qids in parts.items():
            rows = [row for row in variant["rows"] if row["qid"] in set(qids)]
            variant["curves"][part] = {rule: curve(rows, by_qid, rule, values)
                                       for rule, values in RULES.items()}
            for rule, points in variant["curves"][part].items():
                print_curve(f"{name}, {part} ({len(qids)} questions)", rule, points)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    plot(report, path.with_suffix(".png"))


def plot(report: dict, out: Path) -> None:
    """The trade-off curves: answerable questions refused against questions refused with their
    gold passage hidden, one line per variant and rule, each point a threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for name, variant in report["variants"].items():
        for rule, points in variant["curves"]["all"].items():
            axes.plot([p["answerable_refused"] for p in points], [p["hidden_refused"] for p in points],
                      marker="o", markersize=3, label=f"{name}, by {rule}")
        first = next(iter(variant["curves"]["all"].values()))[0]
        axes.annotate(f"{name}, threshold off", (first["answerable_refused"], first["hidden_refused"]),
                      fontsize=7, textcoords="offset points", xytext=(8, -4))
    save_tradeoff(figure, axes, "Refusal thresholds on CMRC 2018 dev (dotted: the targets)", out)


def save_tradeoff(figure, axes, title: str, out: Path) -> None:
    """The trade-off plot's targets (dotted), axes, legend, and the PNG."""
    import matplotlib.pyplot as plt

    axes.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    axes.axvline(0.05, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("answerable questions refused")
    axes.set_ylabel("questions refused with the gold passage hidden")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="KBQA home of the CMRC KB")
    parser.add_argument("--eval-dir", type=Path, default=EVAL)
    parser.add_argument("--questions-from", choices=("dev", "train"), default="dev",
                        help="train: a seeded sample of CMRC train questions the reader was not "
                             "trained on (to fit a refusal rule on, away from dev)")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--llm", default="embedded", help="the model (kbqa's llm setting)")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME (the model alone) or NAME=ADAPTER_DIR (repeatable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports" / "refusal"
                        / "calibration.json")
    parser.add_argument("--split", type=int, default=None,
                        help="with --curves-of: curves for the first N questions and the rest too")
    parser.add_argument("--curves-of", type=Path, default=None,
                        help="recompute the curves of a report this script wrote, and stop")
    args = parser.parse_args()
    settings = load_settings({"home": args.home, "kb": "cmrc", "llm": args.llm})
    service = KbqaService(settings)
    build_kb(service, args.eval_dir)
    if args.curves_of:
        recompute(args.curves_of, args.eval_dir, service, args.split)
        return
    variants = args.variant or ["plain"]
    questions = asked_questions(args.eval_dir, args.questions_from)[args.offset:args.offset + args.limit]
    by_qid = {q["qid"]: q for q in questions}
    asked = {q["qid"]: contexts(service, q) for q in questions}
    report: dict = {"llm": args.llm, "questions_from": args.questions_from,
                    "offset": args.offset, "limit": args.limit,
                    "settings": {"top_k": settings.retrieval.top_k,
                                 "min_coverage": settings.retrieval.min_coverage,
                                 "grounding": settings.answer.grounding}, "variants": {}}
    for spec in variants:
        name, _, folder = spec.partition("=")
        adapters = [Path(folder)] if folder else []
        rows = []
        with service.variant_model.activate(ModelVariant.of(adapters)) as llm:
            greedy = llm.model_copy(update={"temperature": 0.0, "prefix_cache": None,
                                            "refusal": REFUSAL, "refusal_bias": 0.0})
            for number, q in enumerate(questions, start=1):
                for kind, docs in asked[q["qid"]].items():
                    row = {"qid": q["qid"], "kind": kind,
                           **answer(greedy, settings, q["question"], docs)}
                    rows.append(row)
                    margin = "gate" if row["margin"] is None else f"{row['margin']:+.2f}"
                    print(f"[{name} {number}/{len(questions)} {kind}] {margin} "
                          f"{q['question']} → {row['answer'][:40]!r}", file=sys.stderr, flush=True)
        curves = {rule: curve(rows, by_qid, rule, values) for rule, values in RULES.items()}
        report["variants"][name] = {"adapters": [str(a) for a in adapters], "curves": curves,
                                    "rows": rows}
        for rule, points in curves.items():
            print_curve(name, rule, points)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(with_machine(report), ensure_ascii=False, indent=1),
                        encoding="utf-8")


if __name__ == "__main__":
    main()
