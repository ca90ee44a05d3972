"""Paired statistics for comparing two variants on the same questions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class Interval:
    """A point estimate with a 95 % confidence interval."""

    mean: float
    low: float
    high: float


def paired_bootstrap(deltas: Sequence[float], resamples: int = 2000, seed: int = 0) -> Interval:
    """95 % percentile CI of the mean per-question difference, resampling questions."""
    values = np.asarray(deltas, dtype=np.float64)
    if values.size == 0:
        return Interval(0.0, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(values.mean()), float(low), float(high))


def mcnemar_exact(baseline_correct: Sequence[bool], variant_correct: Sequence[bool]) -> dict:
    """Exact McNemar test on paired right/wrong outcomes (two-sided binomial on the discordant pairs).

    b = baseline right and variant wrong, c = baseline wrong and variant right.
    """
    pairs = list(zip(baseline_correct, variant_correct, strict=True))
    b = sum(1 for base, var in pairs if base and not var)
    c = sum(1 for base, var in pairs if var and not base)
    p_value = 1.0 if b + c == 0 else binomtest(c, b + c, 0.5).pvalue
    return {"b": b, "c": c, "p_value": float(p_value)}


def win_tie_loss(deltas: Sequence[float], tolerance: float = 1e-9) -> dict:
    """How many questions the variant did better, the same or worse on."""
    return {"win": sum(d > tolerance for d in deltas),
            "tie": sum(abs(d) <= tolerance for d in deltas),
            "loss": sum(d < -tolerance for d in deltas)}
