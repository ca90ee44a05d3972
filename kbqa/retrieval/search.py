"""Retrieval over a KnowledgeBase: dense (FAISS cosine), BM25 (CJK characters), and their fusion.

Lexical matching matters for Chinese knowledge-base questions: names, numbers and rare terms are
copied verbatim from the passage, and a small multilingual embedder misses many of them. BM25 runs
over CJK characters and character bigrams plus lowercase ASCII words (kbqa.kb.lexical), which needs
no word segmenter and beat jieba on CMRC 2018. Hybrid mode fuses the two candidate lists with
reciprocal rank fusion (RRF), which needs no score calibration between the two score scales.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from langchain_core.documents import Document

from kbqa.retrieval.rerank import Reranker
from kbqa.kb.lexical import searchable_text
from kbqa.kb.store import KnowledgeBase
from kbqa.retrieval.bm25 import bm25_index
from kbqa.retrieval.ranking import candidate_count, mmr_select, reciprocal_rank_fusion

RetrievalMode = Literal["dense", "bm25", "hybrid"]

# BM25 alone finds the answer-bearing chunk more often than dense or hybrid search with the
# embedded embedder, and no weighting of the dense list beat it (docs/benchmarks.md §Retrieval
# tuning). Revisit with a stronger embedder.
DEFAULT_MODE: RetrievalMode = "bm25"
# No default: dense cosine separates answerable from unanswerable questions poorly, so any cut
# costs more answerable hits than it saves (docs/benchmarks.md §Retrieval tuning, Refusal gate).
DEFAULT_SCORE_THRESHOLD: float | None = None
# A passage must contain at least this IDF-weighted share of the question's terms (see
# Bm25Index.coverage): the share that keeps nearly every answerable question and turns away most
# whose gold passage is missing, since the small default LLM refuses too rarely on its own
# (calibration in docs/benchmarks.md §Retrieval tuning, Refusal gate).
DEFAULT_MIN_COVERAGE: float | None = 0.35


def search(kb: KnowledgeBase, query: str, *, mode: RetrievalMode = DEFAULT_MODE, k: int = 4,
           score_threshold: float | None = DEFAULT_SCORE_THRESHOLD,
           min_coverage: float | None = None, mmr: float | None = None,
           reranker: Reranker | None = None) -> list[Document]:
    """Top-`k` chunks for `query`, each with metadata chunk_id, score, dense_score, bm25_score,
    coverage and rank.

    `score` is the mode's own score: cosine similarity (dense), BM25 (bm25) or RRF (hybrid).
    `score_threshold` is always a DENSE cosine similarity (higher = more similar): candidates
    below it are dropped in every mode, so in bm25 mode setting it costs one query embedding.
    `min_coverage` drops chunks holding less than that IDF-weighted share of the query's terms.
    `mmr` (0..1, None = off) re-picks the top `k` from the candidates by maximal marginal
    relevance with that balance (see `mmr_select`), so near-duplicate chunks do not fill the prompt.
    `reranker` rescores the candidates (after fusion and threshold, before MMR); `score` then is
    the reranker's score and metadata `rerank_score` holds it too.
    A chunk whose text (whitespace aside) repeats a better-ranked one is skipped, so the same
    passage stored in several files fills one place, not all `k`.
    """
    if mode not in ("dense", "bm25", "hybrid"):
        raise ValueError(f"unknown retrieval mode {mode!r}; use dense, bm25 or hybrid")
    n = candidate_count(k)
    vector = kb.query_vector(query) if mode != "bm25" or score_threshold is not None else None
    dense = kb.search_vector(vector, n) if mode != "bm25" else []
    lexical = bm25_index(kb) if mode != "dense" or min_coverage is not None else None
    bm25_scores = lexical.scores(query) if lexical is not None else np.zeros(0)
    sparse = lexical.top(bm25_scores, n) if lexical is not None and mode != "dense" else []

    if mode == "dense":
        ranked = dense
    elif mode == "bm25":
        ranked = sparse
    else:
        ranked = reciprocal_rank_fusion([[i for i, _ in dense], [i for i, _ in sparse]])

    dense_scores = dict(dense)
    if vector is not None:
        missing = [i for i, _ in ranked if i not in dense_scores]
        dense_scores.update(kb.cosine_scores(vector, missing))
    if score_threshold is not None:
        ranked = [(i, s) for i, s in ranked if dense_scores.get(i, -1.0) >= score_threshold]
    reranked: dict[int, float] = {}
    if reranker is not None:
        candidates = kb.get_chunks([i for i, _ in ranked[:n]])
        ranked = [(i, s) for i, s in ranked[:n] if i in candidates]
        scores = reranker.score(query, [candidates[i].page_content for i, _ in ranked])
        reranked = {i: float(score) for (i, _), score in zip(ranked, scores)}
        ranked = sorted(reranked.items(), key=lambda pair: -pair[1])  # stable: ties keep order
    if mmr is not None:
        ranked = mmr_select(ranked[:n], kb.chunk_vectors(i for i, _ in ranked[:n]), k, mmr)
    chunks = kb.get_chunks([i for i, _ in ranked[:n]])
    ranked = _distinct(ranked[:n], chunks, k)

    results: list[Document] = []
    for chunk_id, score in ranked:
        doc = chunks[chunk_id]
        coverage = (lexical.coverage(query, searchable_text(doc.page_content, doc.metadata))
                    if lexical is not None else None)
        if min_coverage is not None and coverage is not None and coverage < min_coverage:
            continue
        doc.metadata.update(
            score=score, dense_score=dense_scores.get(chunk_id),
            bm25_score=lexical.score_of(bm25_scores, chunk_id) if lexical is not None else None,
            coverage=coverage, rerank_score=reranked.get(chunk_id), rank=len(results) + 1)
        results.append(doc)
    return results




def _distinct(ranked: list[tuple[int, float]], chunks: dict[int, Document],
              k: int) -> list[tuple[int, float]]:
    """The first `k` candidates that still exist (a concurrent writer may have removed some)
    and whose text no better-ranked candidate already has."""
    seen: set[str] = set()
    kept: list[tuple[int, float]] = []
    for chunk_id, score in ranked:
        doc = chunks.get(chunk_id)
        if doc is None:
            continue
        text = " ".join(doc.page_content.split())
        if text in seen:
            continue
        seen.add(text)
        kept.append((chunk_id, score))
        if len(kept) == k:
            break
    return kept
