"""BM25 postings over a knowledge base's chunks, built from the term counts the knowledge base
stores with each chunk (kbqa.kb.lexical: tokenizer and term rows; here: postings and scoring).

The postings are built in memory the first time they are needed; after a write they are caught
up incrementally (new chunks become a new segment, deleted ones are masked). Rows stored by an
older tokenizer version are counted again from their text, so scores never mix tokenizers.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from kbqa.kb.lexical import decode_row, query_tokens, term_counts, term_id, term_ids, tokenize
from kbqa.kb.reads import LexicalRow
from kbqa.kb.store import KnowledgeBase

# Anserini's defaults: on CMRC train they beat bm25s's 1.5 / 0.75, and nearby values score about
# the same, a plateau, not a peak (docs/benchmarks.md §Retrieval tuning).
BM25_K1 = 0.9
BM25_B = 0.4
BM25_MAX_SEGMENTS = 16
BM25_MAX_DEAD_SHARE = 0.25


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
