"""Retrieval over a KnowledgeBase: dense (FAISS cosine), BM25 (CJK characters), and their fusion.

Lexical matching matters for Chinese knowledge-base questions: names, numbers and rare terms are
copied verbatim from the passage, and a small multilingual embedder misses many of them. BM25 runs
over CJK characters and character bigrams plus lowercase ASCII words (kbqa.kb.lexical), which needs
no word segmenter and beat jieba on CMRC 2018. Hybrid mode fuses the two candidate lists with
reciprocal rank fusion (RRF), which needs no score calibration between the two score scales.

The BM25 postings are built in memory from term counts the store persists with each chunk (no
pickle, no re-tokenising), the first time they are needed; after a write they are caught up
incrementally (new chunks become a new segment, deleted ones are masked). Rows stored by an
older tokenizer version are counted again from their text, so scores never mix tokenizers.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from kbqa.kb.lexical import decode_row, query_tokens, term_counts, term_id, term_ids, tokenize
from kbqa.retrieval.rerank import Reranker
from kbqa.kb.store import KnowledgeBase, LexicalRow

RetrievalMode = Literal["dense", "bm25", "hybrid"]

# Chosen by bench/retrieval_cmrc.py on the CMRC 2018 train questions (2,513; KB = the 713 dev +
# train passages; embedded USE embedder): hit@1 / hit@5 bm25 0.927 / 0.994, hybrid (RRF) 0.817 /
# 0.972, dense 0.612 / 0.875. RRF with the dense list weighted 0.1-0.5, or max-normalised BM25 +
# w * cosine (w 0.05-0.5), never beat bm25 alone by more than one question. Revisit with a
# stronger embedder.
DEFAULT_MODE: RetrievalMode = "bm25"
# Measured: top-1 dense cosine separates answerable from unanswerable questions poorly (AUC 0.77);
# even a 0.25 cut rejects only 9% of unanswerable ones while costing 6 points of hit@5. No default.
DEFAULT_SCORE_THRESHOLD: float | None = None
# A passage must contain at least this IDF-weighted share of the question's terms (see
# Bm25Index.coverage). On CMRC train (2,513 questions, bm25 top-1) 0.35 keeps 98.7% of answerable
# questions and turns away 63% of the same questions asked with their gold passage removed (AUC
# 0.95; dev: 98.5% / 69%). The bigram-only tokenizer needed 0.2 for 97.5% / 59%; with unigrams
# 0.2 would turn away only 13%. The small default LLM refuses too rarely on its own.
DEFAULT_MIN_COVERAGE: float | None = 0.35
RRF_K = 60
# Anserini's defaults. CMRC train hit@1: 0.921 against 0.907 for bm25s's 1.5 / 0.75 (without
# dropping question words); k1 0.6-1.2 with b 0.3-0.5 all gave 0.922-0.929, a plateau, not a peak.
BM25_K1 = 0.9
BM25_B = 0.4
BM25_MAX_SEGMENTS = 16
BM25_MAX_DEAD_SHARE = 0.25


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


@dataclass(frozen=True)
class _Segment:
    """Postings of one batch of chunks, grouped by term (immutable; shared between generations).

    `terms` are the distinct term ids, sorted; term i's postings are [starts[i], starts[i + 1]) of
    `positions` (index into Bm25Index.chunk_ids) and `counts` (term frequency in that chunk).
    """

    terms: np.ndarray
    starts: np.ndarray
    positions: np.ndarray
    counts: np.ndarray

    @classmethod
    def build(cls, first_position: int, rows: list[LexicalRow]) -> tuple[_Segment, np.ndarray]:
        """A segment from stored BM25 rows; also returns the chunks' lengths in tokens."""
        terms, counts, lengths = [], [], []
        for _, length, term_blob, count_blob, text in rows:
            if term_blob is None:  # no row, or one from another tokenizer: count from the text
                length, row_terms, row_counts = term_counts(text or "")
            else:
                row_terms, row_counts = decode_row(term_blob, count_blob or b"")
            terms.append(row_terms)
            counts.append(row_counts)
            lengths.append(length)
        flat_terms = np.concatenate(terms) if terms else np.zeros(0, dtype=np.int64)
        positions = np.repeat(np.arange(first_position, first_position + len(rows), dtype=np.int32),
                              [len(t) for t in terms])
        order = np.argsort(flat_terms, kind="stable")
        flat_terms = flat_terms[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(flat_terms)) + 1, [len(flat_terms)]))
        segment = cls(flat_terms[starts[:-1]], starts, positions[order],
                      np.concatenate(counts).astype(np.float32)[order] if counts
                      else np.zeros(0, dtype=np.float32))
        return segment, np.asarray(lengths, dtype=np.float32)

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, counts) of the chunks in this segment that contain `term`."""
        i = int(np.searchsorted(self.terms, term))
        if i == len(self.terms) or self.terms[i] != term:
            return _NO_POSITIONS, _NO_COUNTS
        start, end = self.starts[i], self.starts[i + 1]
        return self.positions[start:end], self.counts[start:end]


_NO_POSITIONS = np.zeros(0, dtype=np.int32)
_NO_COUNTS = np.zeros(0, dtype=np.float32)


class Bm25Index:
    """BM25 (Lucene variant, as bm25s computes it) over one generation of a knowledge base's chunks.

    Built from the term counts the store persists (kbqa.kb.lexical), never by re-tokenising the
    base: `caught_up` reads only chunks added since and marks deleted ones dead, so a write costs
    a reader time proportional to the write. Statistics (N, document frequency, average length)
    count live chunks only, so scores equal a fresh index's. `worn_out` says when dead postings
    or small segments have piled up enough that a fresh build is worth it.
    """

    def __init__(self, generation: int = -1, chunk_ids: np.ndarray | None = None,
                 lengths: np.ndarray | None = None, alive: np.ndarray | None = None,
                 segments: tuple[_Segment, ...] = ()) -> None:
        self.generation = generation
        self.chunk_ids = np.zeros(0, dtype=np.int64) if chunk_ids is None else chunk_ids
        self.lengths = np.zeros(0, dtype=np.float32) if lengths is None else lengths
        self.alive = np.zeros(0, dtype=bool) if alive is None else alive
        self._segments = segments
        self._position = {int(chunk_id): i for i, chunk_id in enumerate(self.chunk_ids)}
        self._live = int(self.alive.sum())
        average = float(self.lengths[self.alive].mean()) if self._live else 1.0
        self._norm = BM25_K1 * (1 - BM25_B + BM25_B * self.lengths / max(average, 1e-9))

    def caught_up(self, kb: KnowledgeBase) -> Bm25Index:
        """A new index for the knowledge base's current generation, sharing unchanged segments."""
        last = int(self.chunk_ids[-1]) if len(self.chunk_ids) else -1
        generation, ids, rows = kb.lexical_rows(last)
        alive = self.alive & np.isin(self.chunk_ids, ids)
        segments = self._segments
        chunk_ids, lengths = self.chunk_ids, self.lengths
        if rows:
            segment, new_lengths = _Segment.build(len(chunk_ids), rows)
            segments = (*segments, segment)
            chunk_ids = np.concatenate([chunk_ids, [row[0] for row in rows]]).astype(np.int64)
            lengths = np.concatenate([lengths, new_lengths])
            alive = np.concatenate([alive, np.ones(len(rows), dtype=bool)])
        return Bm25Index(generation, chunk_ids, lengths, alive, segments)

    def worn_out(self) -> bool:
        """More than a quarter of postings belong to deleted chunks, or too many segments."""
        dead = len(self.alive) - self._live
        return (len(self._segments) > BM25_MAX_SEGMENTS
                or dead > BM25_MAX_DEAD_SHARE * len(self.alive))

    def _postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, counts) of the live chunks containing `term`, over all segments."""
        parts = [segment.postings(term) for segment in self._segments]
        positions = np.concatenate([p for p, _ in parts]) if parts else _NO_POSITIONS
        counts = np.concatenate([c for _, c in parts]) if parts else _NO_COUNTS
        live = self.alive[positions]
        return positions[live], counts[live]

    def _idf(self, frequency: int) -> float:
        return math.log(1.0 + (self._live - frequency + 0.5) / (frequency + 0.5))

    def idf(self, token: str) -> float:
        """BM25's idf; a token absent from the whole knowledge base weighs the most."""
        return self._idf(len(self._postings(term_id(token))[0]))

    def coverage(self, query: str, text: str) -> float:
        """IDF-weighted share of the query's distinct tokens found in `text` (0..1).

        A passage that lacks the query's rare terms (股票代码 in a handbook that never mentions
        them) scores low however well it matches the common ones (公司, 多少).
        """
        wanted = set(query_tokens(query))
        if not wanted:
            return 0.0
        present = wanted & set(tokenize(text))
        return sum(map(self.idf, present)) / sum(map(self.idf, wanted))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk (aligned with `chunk_ids`); zeros if nothing matches.

        A term repeated in the query counts once per repetition, as in bm25s; question words
        (什么, 哪里, ...) are left out (kbqa.kb.lexical.query_tokens).
        """
        result = np.zeros(len(self.chunk_ids), dtype=np.float32)
        terms, repeats = np.unique(term_ids(query_tokens(query)), return_counts=True)
        for term, repeat in zip(terms, repeats):
            positions, counts = self._postings(int(term))
            if len(positions):
                weight = repeat * self._idf(len(positions))
                result[positions] += weight * counts / (counts + self._norm[positions])
        return result

    def top(self, scores: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Top-`n` (chunk id, BM25 score) from an array returned by `scores`; positive only, best first."""
        n = min(n, int(np.count_nonzero(scores > 0)))
        if n <= 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((self.chunk_ids[top], -scores[top]))]
        return [(int(self.chunk_ids[i]), float(scores[i])) for i in top]

    def score_of(self, scores: np.ndarray, chunk_id: int) -> float | None:
        """Look up one chunk's score in an array returned by `scores`."""
        position = self._position.get(chunk_id)
        return None if position is None or not self.alive[position] else float(scores[position])


_bm25_cache: weakref.WeakKeyDictionary[KnowledgeBase, Bm25Index] = weakref.WeakKeyDictionary()
_bm25_lock = threading.Lock()


def bm25_index(kb: KnowledgeBase) -> Bm25Index:
    """The knowledge base's BM25 index, caught up incrementally when its generation has changed.

    Held in memory per KnowledgeBase object and shared by all its retrievers; each generation is a
    new object, so a search running on the previous one is never changed under its feet.
    """
    with _bm25_lock:
        cached = _bm25_cache.get(kb)
        if cached is not None and cached.generation == kb.generation:
            return cached
        if cached is None or cached.worn_out():
            cached = Bm25Index()
        index = cached.caught_up(kb)
        if index.worn_out():
            index = Bm25Index().caught_up(kb)
        _bm25_cache[kb] = index
        return index


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
    ranked = ranked[:k]

    chunks = kb.get_chunks([i for i, _ in ranked])
    results: list[Document] = []
    for chunk_id, score in ranked:
        doc = chunks.get(chunk_id)
        if doc is None:  # removed by a concurrent writer since the search
            continue
        coverage = lexical.coverage(query, doc.page_content) if lexical is not None else None
        if min_coverage is not None and coverage is not None and coverage < min_coverage:
            continue
        doc.metadata.update(
            score=score, dense_score=dense_scores.get(chunk_id),
            bm25_score=lexical.score_of(bm25_scores, chunk_id) if lexical is not None else None,
            coverage=coverage, rerank_score=reranked.get(chunk_id), rank=len(results) + 1)
        results.append(doc)
    return results


class KnowledgeBaseRetriever(BaseRetriever):
    """LangChain retriever over a KnowledgeBase (composes in LCEL: ``retriever | prompt | llm``).

    `mode`: "dense" (embedding cosine), "bm25" (CJK character BM25) or "hybrid" (RRF of both).
    `score_threshold`: minimum DENSE cosine similarity in [-1, 1], higher = more similar; applied
    in every mode (bm25 mode then embeds the query too); None keeps everything.
    `min_coverage`: minimum IDF-weighted share of the query's terms a chunk must contain (0..1);
    None keeps everything. When nothing passes, the QA chain refuses without calling the LLM.
    `mmr`: None, or the MMR balance in 0..1 (1 = relevance only) for diverse top-k chunks.
    `reranker`: None, or a kbqa.retrieval.rerank.Reranker that reorders the candidates.
    Each Document's metadata carries chunk_id, score, dense_score, bm25_score and rank (1-based).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: KnowledgeBase
    mode: RetrievalMode = DEFAULT_MODE
    k: int = Field(default=4, ge=1)
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD
    min_coverage: float | None = None
    mmr: float | None = Field(default=None, ge=0.0, le=1.0)
    reranker: Reranker | None = None

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return search(self.kb, query, mode=self.mode, k=self.k,
                      score_threshold=self.score_threshold, min_coverage=self.min_coverage,
                      mmr=self.mmr, reranker=self.reranker)
