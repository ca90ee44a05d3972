"""BM25 at 10k and 100k chunks: rebuilding from text (the old way) vs persisted, incremental counts.

Before, every committed write made the next BM25 query re-tokenise every chunk and rebuild a bm25s
index. Now the store persists each chunk's term counts with the chunk, and a reader catches up by
reading only what changed. For each size this prints:
  * rebuild: tokenise all texts + bm25s index (what each write used to cost a reader);
  * load: build the postings from stored counts (a reader's first query after opening);
  * catch-up after adding 10 chunks and after deleting 10 (what a write costs a reader now);
  * query p50/p95 for both, top-10 agreement between them, and storage per chunk.

Chunks are the generated corpus of zh_corpus.py; vectors come from a random 32-d stand-in
embedder, since BM25 never reads them. Queries are 100 CMRC dev questions.

    python bench/bm25_update.py                   # 10k and 100k
    python bench/bm25_update.py --sizes 10000

Writes JSON to bench/results/bm25_update.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import bm25s
import numpy as np
from zh_corpus import CMRC, chunk_texts

from machine_facts import with_machine
from kbqa.embeddings.embedders import EncoderEmbeddings
from kbqa.kb.lexical import query_tokens, tokenize
from kbqa.retrieval.bm25 import BM25_B, BM25_K1, Bm25Index, bm25_index
from kbqa.kb.store import KnowledgeBase

RESULTS = Path(__file__).resolve().parent / "results"


class RandomEncoder:
    """Random vectors: BM25 does not read them, and real embedding would take hours at 100k."""

    dimension = 32

    def __init__(self) -> None:
        self._rng = np.random.default_rng(0)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._rng.standard_normal((len(texts), self.dimension)).astype(np.float32)


def questions(count: int) -> list[str]:
    with (CMRC / "dev" / "questions.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in handle if line.strip()][:count]


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def percentiles(times: list[float]) -> tuple[float, float]:
    return (round(float(np.percentile(times, 50)) * 1000, 2),
            round(float(np.percentile(times, 95)) * 1000, 2))


def old_rebuild(texts: list[str]) -> bm25s.BM25:
    model = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    model.index([tokenize(text) for text in texts], show_progress=False)
    return model


def query_times(score, asked: list[str]) -> tuple[list[float], list[np.ndarray]]:
    times, tops = [], []
    for question in asked:
        started = time.perf_counter()
        scores = score(question)
        times.append(time.perf_counter() - started)
        tops.append(np.argsort(-scores, kind="stable")[:10])
    return times, tops


def run_size(size: int, work: Path, asked: list[str]) -> dict:
    texts = chunk_texts(size)
    embeddings = EncoderEmbeddings(RandomEncoder(), "random-32", RandomEncoder.dimension,
                                   batch_size=4096)
    with KnowledgeBase.create(work, f"bm25-{size}", embeddings) as kb:
        for start in range(0, size, 10_000):
            kb.add_texts(texts[start:start + 10_000])
        model, rebuild_s = timed(old_rebuild, texts)
        index, load_s = timed(lambda: Bm25Index().caught_up(kb))

        def old_score(question: str) -> np.ndarray:
            tokens = [t for t in query_tokens(question) if t in model.vocab_dict]
            return model.get_scores(tokens) if tokens else np.zeros(size)

        old_times, old_tops = query_times(old_score, asked)
        new_times, new_tops = query_times(index.scores, asked)
        agreement = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(old_tops, new_tops)]))

        bm25_index(kb)  # cache this generation, then measure catching up after small writes
        keys = kb.add_texts(chunk_texts(10, seed=1))
        _, add_s = timed(bm25_index, kb)
        kb.delete(keys)
        _, delete_s = timed(bm25_index, kb)
        stored = kb._conn.execute(
            "SELECT sum(length(terms) + length(counts)) FROM bm25_terms").fetchone()[0]
    postings = sum(len(segment.positions) for segment in index._segments)
    return {"chunks": size, "old_rebuild_s": round(rebuild_s, 2), "load_s": round(load_s, 2),
            "catch_up_add10_ms": round(add_s * 1000, 1),
            "catch_up_delete10_ms": round(delete_s * 1000, 1),
            "old_query_ms_p50_p95": percentiles(old_times),
            "new_query_ms_p50_p95": percentiles(new_times),
            "top10_agreement": round(agreement, 4),
            "stored_bytes_per_chunk": round(stored / size, 1),
            "memory_bytes_per_chunk": round(postings * 8 / size, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    asked = questions(100)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kbqa-bm25-") as tmp:
        for size in args.sizes:
            rows.append(run_size(size, Path(tmp), asked))
            print(json.dumps(rows[-1]), flush=True)
    header = (f"{'chunks':>7} {'rebuild s':>9} {'load s':>7} {'+10 ms':>7} {'-10 ms':>7} "
              f"{'old q p50/p95 ms':>17} {'new q p50/p95 ms':>17} {'top10 agree':>11} "
              f"{'disk B/chunk':>12} {'RAM B/chunk':>11}")
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        old, new = row["old_query_ms_p50_p95"], row["new_query_ms_p50_p95"]
        print(f"{row['chunks']:>7} {row['old_rebuild_s']:>9} {row['load_s']:>7} "
              f"{row['catch_up_add10_ms']:>7} {row['catch_up_delete10_ms']:>7} "
              f"{f'{old[0]}/{old[1]}':>17} {f'{new[0]}/{new[1]}':>17} "
              f"{row['top10_agreement']:>11} {row['stored_bytes_per_chunk']:>12} "
              f"{row['memory_bytes_per_chunk']:>11}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bm25_update.json"
    out.write_text(json.dumps(with_machine({"rows": rows, "cpu_note": "2 cores, shared with another job"}),
                              indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
