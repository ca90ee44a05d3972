"""Per-variant metrics and paired comparisons against the plain variant."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

from kbqa.evaluation.data import Question, Variant
from kbqa.evaluation.stats import mcnemar_exact, paired_bootstrap, win_tie_loss

RESERVED_KEYS = frozenset({"comparisons", "input_problems"})


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _answer_metrics(rows: list[dict], unanswerable: list[dict]) -> dict[str, Any]:
    generated = [r for r in rows + unanswerable if r["tokens"] > 0]
    seconds = sum(r["latency_s"] for r in generated)
    return {"em": _mean([r["em"] for r in rows]), "f1": _mean([r["f1"] for r in rows]),
            "rouge_l": _mean([r["rouge_l"] for r in rows]),
            "refusal_rate": _mean([float(r["refused"]) for r in unanswerable]),
            "answerable_refusal_rate": _mean([float(r["refused"]) for r in rows]),
            "mean_latency_s": _mean([r["latency_s"] for r in rows + unanswerable]),
            "tokens_per_s": sum(r["tokens"] for r in generated) / seconds if seconds else None}


def summarise(variants: tuple[Variant, ...], questions: list[Question],
              retrieval: dict[str, dict[str, float]], cache: Any, *, answers: bool) -> dict:
    """metrics.json: {variant: {"retrieval", "answer", "n"}, ..., "comparisons": {...}}."""
    shared_retrieval = {key: _mean([retrieval[q.qid][key] for q in questions
                                    if key in retrieval[q.qid]])
                        for key in ("hit@1", "hit@5", "mrr", "doc@5")}
    metrics: dict[str, Any] = {}
    per_question: dict[str, list[dict]] = {}
    for variant in variants:
        rows = [cache.get(variant.name, "answerable", q.qid) for q in questions]
        hidden = [cache.get(variant.name, "unanswerable", q.qid) for q in questions if q.doc_id]
        rows, hidden = [r for r in rows if r], [r for r in hidden if r]
        per_question[variant.name] = rows
        metrics[variant.name] = {
            "retrieval": shared_retrieval,
            "answer": _answer_metrics(rows, hidden) if answers else None,
            "n": len(questions), "n_unanswerable": len(hidden),
            "adapters": [str(a) for a in variant.adapters]}
    if answers:
        metrics["comparisons"] = {v.name: compare(per_question["plain"], per_question[v.name])
                                  for v in variants if not v.is_plain}
    return metrics


def compare(plain: list[dict], variant: list[dict]) -> dict:
    """Paired F1/EM deltas (variant − plain) over the questions both answered."""
    by_qid = {r["qid"]: r for r in plain}
    pairs = [(by_qid[r["qid"]], r) for r in variant if r["qid"] in by_qid]
    f1_deltas = [v["f1"] - p["f1"] for p, v in pairs]
    em_deltas = [v["em"] - p["em"] for p, v in pairs]
    return {"vs": "plain", "n": len(pairs),
            "f1_delta": asdict(paired_bootstrap(f1_deltas)),
            "em_delta": asdict(paired_bootstrap(em_deltas, seed=1)),
            "mcnemar_em": mcnemar_exact([p["em"] == 1.0 for p, _ in pairs],
                                        [v["em"] == 1.0 for _, v in pairs]),
            "win_tie_loss_f1": win_tie_loss(f1_deltas),
            "per_question": [{"qid": p["qid"], "plain_f1": p["f1"], "f1": v["f1"],
                              "delta_f1": v["f1"] - p["f1"]} for p, v in pairs]}
