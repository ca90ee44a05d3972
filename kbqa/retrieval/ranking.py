"""Ranking steps that need no index: reciprocal rank fusion of several rankings, MMR diversity,
and how many candidates each ranker contributes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# the usual RRF constant (Cormack et al. 2009): damps the weight of the very first ranks
RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]],
                           k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of 1 / (k + rank), rank starting at 1.

    Ties are broken by the best rank an id reached in any list, then by id, so results are stable.
    """
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], best_rank[pair[0]], pair[0]))


def mmr_select(ranked: Sequence[tuple[int, float]], vectors: dict[int, np.ndarray], k: int,
               balance: float) -> list[tuple[int, float]]:
    """Maximal marginal relevance: pick `k` of `ranked` trading relevance against redundancy.

    Relevance is the ranker's own score divided by the largest magnitude among the candidates
    (BM25, RRF and cosine differ in scale; min-max scaling would zero the last candidate however
    relevant it is); redundancy is the highest cosine to an already picked chunk. `balance` 1.0 keeps the
    ranker's order, lower values favour diversity. Candidates without a vector keep their rank
    relevance and count as redundant with nothing. Returned pairs keep the ranker's scores.
    """
    if not ranked:
        return []
    scores = np.asarray([score for _, score in ranked], dtype=np.float64)
    largest = np.abs(scores).max()
    relevance = scores / largest if largest > 0 else np.ones(len(ranked))
    picked: list[int] = []
    remaining = list(range(len(ranked)))
    while remaining and len(picked) < k:
        def value(i: int) -> float:
            vector = vectors.get(ranked[i][0])
            redundancy = max((float(vector @ vectors[ranked[j][0]]) for j in picked
                              if vector is not None and ranked[j][0] in vectors), default=0.0)
            return balance * relevance[i] - (1 - balance) * redundancy

        best = max(remaining, key=value)  # ties: the earlier (better ranked) candidate
        picked.append(best)
        remaining.remove(best)
    return [ranked[i] for i in picked]


def candidate_count(k: int) -> int:
    """How many candidates each ranker contributes before fusion and filtering."""
    return max(20, 4 * k)
