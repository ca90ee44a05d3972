"""report.md and report.html (with plots embedded) from an evaluation's metrics and answers."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from kbqa.evaluation.data import Question, Variant
from kbqa.evaluation.stats import paired_bootstrap


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def metrics_table(metrics: dict, variants: tuple[Variant, ...]) -> list[list[str]]:
    header = ["variant", "hit@1", "hit@5", "MRR", "EM", "F1", "ROUGE-L", "refusal (unanswerable)",
              "refusal (answerable)", "latency s", "answer tokens/s (incl. prompt)"]
    rows = [header]
    for variant in variants:
        m = metrics[variant.name]
        a = m["answer"] or {}
        rows.append([variant.name, *(_fmt(m["retrieval"][k]) for k in ("hit@1", "hit@5", "mrr")),
                     *(_fmt(a.get(k)) for k in ("em", "f1", "rouge_l", "refusal_rate",
                                                "answerable_refusal_rate", "mean_latency_s",
                                                "tokens_per_s"))])
    return rows


def comparison_table(metrics: dict) -> list[list[str]]:
    rows = [["variant vs plain", "ΔF1 [95% CI]", "ΔEM [95% CI]", "win/tie/loss (F1)",
             "McNemar EM p (b, c)"]]
    for name, c in metrics.get("comparisons", {}).items():
        f1, em, wtl, mc = c["f1_delta"], c["em_delta"], c["win_tie_loss_f1"], c["mcnemar_em"]
        rows.append([name, f"{f1['mean']:+.3f} [{f1['low']:+.3f}, {f1['high']:+.3f}]",
                     f"{em['mean']:+.3f} [{em['low']:+.3f}, {em['high']:+.3f}]",
                     f"{wtl['win']}/{wtl['tie']}/{wtl['loss']}",
                     f"{mc['p_value']:.3g} ({mc['b']}, {mc['c']})"])
    return rows


def _plots(metrics: dict, variants: tuple[Variant, ...], cache: Any,
           questions: list[Question]) -> str | None:
    """Metric bars with bootstrap CIs and a per-question F1 scatter, as one base64 PNG."""
    if not metrics.get("comparisons") and not any(metrics[v.name]["answer"] for v in variants):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [v for v in variants if not v.is_plain]
    figure, axes = plt.subplots(1, 1 + len(others), figsize=(5 * (1 + len(others)), 4))
    axes = list(axes) if len(others) else [axes]
    width = 0.8 / len(variants)
    for index, variant in enumerate(variants):
        rows = [cache.get(variant.name, "answerable", q.qid) for q in questions]
        rows = [r for r in rows if r]
        for position, key in enumerate(("em", "f1", "rouge_l")):
            interval = paired_bootstrap([r[key] for r in rows])
            axes[0].bar(position + index * width, interval.mean, width,
                        yerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
                        capsize=3, color=f"C{index}",
                        label=variant.name if position == 0 else None)
    axes[0].set_xticks([p + width * (len(variants) - 1) / 2 for p in range(3)],
                       ["EM", "F1", "ROUGE-L"])
    axes[0].set_ylim(0, 1)
    axes[0].set_title("answer quality (95% CI)")
    axes[0].legend()
    for axis, variant in zip(axes[1:], others):
        pairs = metrics["comparisons"][variant.name]["per_question"]
        axis.scatter([p["plain_f1"] for p in pairs], [p["f1"] for p in pairs], alpha=0.5, s=14)
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        axis.set_xlabel("plain F1")
        axis.set_ylabel(f"{variant.name} F1")
        axis.set_title(f"per question: {variant.name} vs plain")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def side_by_side(questions: list[Question], variants: tuple[Variant, ...], cache: Any,
                 retrieved: dict) -> list[list[str]]:
    rows = [["question", "gold", *(v.name for v in variants), "sources"]]
    for q in questions:
        answers = [(cache.get(v.name, "answerable", q.qid) or {}).get("answer", "–")
                   for v in variants]
        sources = ", ".join(dict.fromkeys(retrieved[q.qid].doc_ids[:3]))
        rows.append([q.question, " / ".join(q.answers), *answers, sources])
    return rows


def _markdown(table: list[list[str]]) -> str:
    clean = [[cell.replace("|", "\\|").replace("\n", " ") for cell in row] for row in table]
    lines = ["| " + " | ".join(clean[0]) + " |", "|" + "---|" * len(clean[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in clean[1:]])


def _html(table: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_reports(out: Path, metrics: dict, questions: list[Question], retrieved: dict,
                  cache: Any, variants: tuple[Variant, ...]) -> None:
    sections = [("Metrics per variant", metrics_table(metrics, variants))]
    if metrics.get("comparisons"):
        sections.append(("Paired comparison with the plain model", comparison_table(metrics)))
    sections.append(("Answers side by side", side_by_side(questions, variants, cache, retrieved)))
    intro = (f"{len(questions)} questions; retrieval is shared by all variants. Refusal "
             "(unanswerable) = share of refusals when the gold document is hidden; ΔF1/ΔEM are "
             "variant − plain with paired-bootstrap 95% CIs (2,000 resamples); McNemar is exact.")
    markdown = ["# kbqa evaluation", "", intro, ""]
    for title, table in sections:
        markdown += [f"## {title}", "", _markdown(table), ""]
    (out / "report.md").write_text("\n".join(markdown), encoding="utf-8")

    plot = _plots(metrics, variants, cache, questions)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>kbqa evaluation</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;"
             "vertical-align:top}th{background:#f3f3f3}</style></head><body>",
             "<h1>kbqa evaluation</h1>", f"<p>{html.escape(intro)}</p>"]
    for title, table in sections[:-1]:
        parts += [f"<h2>{html.escape(title)}</h2>", _html(table)]
    if plot:
        parts.append(f"<h2>Plots</h2><img alt='metrics' src='data:image/png;base64,{plot}'>")
    parts += [f"<h2>{html.escape(sections[-1][0])}</h2>", _html(sections[-1][1]), "</body></html>"]
    (out / "report.html").write_text("".join(parts), encoding="utf-8")
