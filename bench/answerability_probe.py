"""Fit the answerability probe on CMRC train features (and generated company documents') and
measure it on CMRC dev and the company-documents dev set.

    python bench/answerability_probe.py --train bench/reports/answerability/train.npz \\
        --train bench/reports/answerability/synthetic.npz --dev bench/reports/answerability/dev.npz \\
        --company-dev bench/reports/answerability/company-dev.npz \\
        --answers bench/reports/refusal/calibration-dev-default.json --variant default \\
        --save kbqa/llm/readers/qwen2.5-coder-0.5b-reader

Features come from bench/answerability_features.py. For each layer a standardised, L2-regularised
logistic regression is scored by 5-fold cross-validation on train (ROC AUC of "the passages hold
the answer"); the best layer is fitted on all of train. On dev, the probe's probability is joined
to the answers a recorded run gave (bench/refusal_calibration.py, same questions, same passages):
below a threshold the answer becomes the refusal. The curve is printed for all of dev, its first
100 questions (where an operating point is chosen) and the rest. --save writes the probe
(kbqa.llm.answerability) into a reader's folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from cmrc_dev import EVAL, _jsonl
from refusal_calibration import save_tradeoff

from kbqa.evaluation.metrics import exact_match, f1_score
from kbqa.qa.chain import is_refusal
from kbqa.qa.prompts import REFUSAL

THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7)


ROWS = ("states", "labels", "qids", "kinds", "lengths")
SET_NAMES = {"train": "CMRC 2018 train", "dev": "CMRC 2018 dev",
             "company-synthetic": "generated company documents (bench/synthetic_company.py)",
             "company-dev": "the company-documents dev set"}


def load(*paths: Path) -> dict[str, np.ndarray]:
    """The rows of one or more feature files, concatenated."""
    files = [np.load(path) for path in paths]
    return {key: np.concatenate([f[key] for f in files]) for key in ROWS}


def fit(states: np.ndarray, labels: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(states, labels)


def save(model, layer: int, fitted_on: str, folder: Path) -> None:
    """The fitted scaler and regression as kbqa's probe file."""
    import torch

    from kbqa.llm.answerability import AnswerabilityProbe

    scaler, regression = model[0], model[-1]
    probe = AnswerabilityProbe(
        layer, torch.tensor(scaler.mean_, dtype=torch.float32),
        torch.tensor(scaler.scale_, dtype=torch.float32),
        torch.tensor(regression.coef_[0], dtype=torch.float32),
        torch.tensor(regression.intercept_, dtype=torch.float32), fitted_on)
    print(f"wrote {probe.save(folder)}")


def choose_layer(train: dict, cs: tuple[float, ...]) -> tuple[int, float, list[dict]]:
    """The layer and regularisation with the best 5-fold ROC AUC on train (folds by question)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    states, labels, groups = train["states"].astype(np.float32), train["labels"], train["qids"]
    scores = []
    for layer in range(states.shape[1]):
        for c in cs:
            predicted = np.zeros(len(labels))
            for fit_rows, test_rows in GroupKFold(5).split(states, labels, groups):
                model = fit(states[fit_rows, layer], labels[fit_rows], c)
                predicted[test_rows] = model.predict_proba(states[test_rows, layer])[:, 1]
            scores.append({"layer": layer, "c": c, "auc": float(roc_auc_score(labels, predicted))})
    best = max(scores, key=lambda s: s["auc"])
    return best["layer"], best["c"], scores


def curve(rows: list[dict], probability: dict[tuple[str, str], float],
          gold: dict[str, list[str]]) -> list[dict]:
    """EM, F1 and refusal shares when answers whose probe probability is below each threshold
    become the refusal (rows the retrieval gate refused stay refused)."""
    points = []
    for threshold in THRESHOLDS:
        def final(row: dict) -> str:
            p = probability.get((row["qid"], row["kind"]))
            return REFUSAL if p is None or p < threshold else row["answer"]

        answerable = [r for r in rows if r["kind"] == "answerable"]
        hidden = [r for r in rows if r["kind"] == "unanswerable"]
        points.append({
            "threshold": threshold,
            "em": statistics.fmean(exact_match(final(r), gold[r["qid"]]) for r in answerable),
            "f1": statistics.fmean(f1_score(final(r), gold[r["qid"]]) for r in answerable),
            "answerable_refused": statistics.fmean(is_refusal(final(r)) for r in answerable),
            "hidden_refused": statistics.fmean(is_refusal(final(r)) for r in hidden)})
    return points


def plot(curves: dict, margin_points: list[dict] | None, out: Path) -> None:
    """Answerable questions refused against questions refused with the gold passage hidden: the
    probe's floors beside the first-token refusal bias, on the same recorded answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for part, style in (("all", "-"), ("first 100", ":"), ("after 100", "--")):
        points = curves[part]
        axes.plot([p["answerable_refused"] for p in points], [p["hidden_refused"] for p in points],
                  style, marker="o", markersize=3, label=f"probe floor, {part}")
    if margin_points:
        axes.plot([p["answerable_refused"] for p in margin_points],
                  [p["hidden_refused"] for p in margin_points], marker="s", markersize=3,
                  color="grey", label="refusal_bias (first token), all")
    axes.set_xlim(0, 0.3)
    save_tradeoff(figure, axes, "CMRC 2018 dev: probe floor vs refusal_bias (dotted: targets)", out)


def company_curve(model, layer: int, features: dict, report: Path) -> list[dict]:
    """The company-documents dev set's trade-off under this probe: its probabilities put in place
    of those a recorded run (bench/company_docs.py) kept, each floor applied to that run's answers."""
    from company_docs import answerability_curve, summarise

    p = model.predict_proba(features["states"][:, layer].astype(np.float32))[:, 1]
    by_id = {str(q).rsplit("-", 1)[-1]: float(v) for q, v in zip(features["qids"], p)}
    rows = json.loads(report.read_text(encoding="utf-8"))["rows"]
    rows = [dict(r, answerability=by_id.get(r["id"]) if r["answerability"] is not None else None)
            for r in rows]
    base = summarise(rows)
    points = [{"min_answerability": 0.0, **{k: base[k] for k in ("answerable_right",
              "answerable_refused", "unanswerable_refused")}}] + answerability_curve(rows)
    print("\ncompany-documents dev set\n| floor | right | answerable refused | unanswerable refused |"
          "\n|---|---|---|---|")
    for point in points:
        print(f"| {point['min_answerability']:g} | {point['answerable_right']:.3f} | "
              f"{point['answerable_refused']:.3f} | {point['unanswerable_refused']:.3f} |")
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, action="append", required=True,
                        help="feature files to fit on (repeatable)")
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--answers", type=Path, required=True,
                        help="a bench/refusal_calibration.py report of the same model on dev")
    parser.add_argument("--variant", default="default")
    parser.add_argument("--eval-dir", type=Path, default=EVAL)
    parser.add_argument("--layer", type=int, default=None, help="skip the layer search")
    parser.add_argument("--c", type=float, default=0.01)
    parser.add_argument("--company-dev", type=Path, default=None,
                        help="features of the company-documents dev set (answerability_features.py "
                             "--company dev): its curve from the answers of --company-report")
    parser.add_argument("--company-report", type=Path,
                        default=Path(__file__).parent / "reports" / "company-docs" / "default.json")
    parser.add_argument("--out", type=Path, default=None, help="the curves and scores as JSON")
    parser.add_argument("--save", type=Path, default=None,
                        help="write the fitted probe (answerability.safetensors) into this folder")
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    train, dev = load(*args.train), load(args.dev)
    if args.layer is None:
        layer, c, scores = choose_layer(train, (0.001, 0.01, 0.1))
        for s in scores:
            print(f"layer {s['layer']:2d} C {s['c']:<6g} train CV AUC {s['auc']:.3f}")
    else:
        layer, c, scores = args.layer, args.c, []
    model = fit(train["states"][:, layer].astype(np.float32), train["labels"], c)
    p_dev = model.predict_proba(dev["states"][:, layer].astype(np.float32))[:, 1]
    auc = float(roc_auc_score(dev["labels"], p_dev))
    print(f"chosen layer {layer}, C {c}: dev AUC {auc:.3f} ({len(p_dev)} rows)")
    probability = {(q, k): float(p) for q, k, p in zip(dev["qids"], dev["kinds"], p_dev)}
    gold = {q["qid"]: q["answers"] for q in _jsonl(args.eval_dir / "dev" / "questions.jsonl")}
    recorded = json.loads(args.answers.read_text(encoding="utf-8"))["variants"][args.variant]
    rows = recorded["rows"]
    order = list(dict.fromkeys(r["qid"] for r in rows))
    parts = {"all": order, "first 100": order[:100], "after 100": order[100:]}
    curves = {}
    for part, qids in parts.items():
        chosen = set(qids)
        curves[part] = curve([r for r in rows if r["qid"] in chosen], probability, gold)
        print(f"\n{part} ({len(qids)} questions)\n| threshold | EM | F1 | answerable refused "
              "| hidden refused |\n|---|---|---|---|---|")
        for p in curves[part]:
            print(f"| {p['threshold']:g} | {p['em']:.3f} | {p['f1']:.3f} | "
                  f"{p['answerable_refused']:.3f} | {p['hidden_refused']:.3f} |")
    company = None
    if args.company_dev:
        company = company_curve(model, layer, load(args.company_dev), args.company_report)
    if args.save:
        sets = dict.fromkeys(SET_NAMES.get(str(np.load(path)["questions_from"]), "other")
                             for path in args.train)
        fitted_on = (f"{' + '.join(sets)}: {len(set(train['qids']))} questions, CMRC ones asked with "
                     f"and without their gold passage ({len(train['labels'])} prompts); C {c}; "
                     f"CMRC dev AUC {auc:.3f}")
        save(model, layer, fitted_on, args.save)
    if args.out:
        margins = (recorded.get("curves", {}).get("all") or {}).get("margin")
        plot(curves, margins, args.out.with_suffix(".png"))
        args.out.write_text(json.dumps({"layer": layer, "c": c, "dev_auc": auc, "scores": scores,
                                        "curves": curves, "company_dev": company}, indent=1),
                            encoding="utf-8")


if __name__ == "__main__":
    main()
