"""Milvus Lite as kbqa's vector store at 10k and 100k chunks, beside the default FAISS Flat.

The vectors are retrieval_scale.py's synthetic clustered 512-d unit vectors; queries are perturbed
stored vectors. Everything goes through the backends KnowledgeBase drives (kbqa.vector_backends),
so the figures include what kbqa adds (journal file, batching, the flush after each write):

  insert     one write of all n vectors (as one big ingest): rows/s, journal + upserts + flush
  indexing   seconds until Milvus Lite's background HNSW build has covered every data file
  search     single-query p50/p95 ms (one query at a time, as a user asks), recall@10 against
             the exact FAISS Flat answer; "while indexing" = straight after the insert
  small      p50 ms of a 10-chunk write (10 removed, 10 added, flush) into the full collection
  reopen     seconds to open the collection again (index files read back, not rebuilt)

Milvus Lite runs in this process (gRPC on localhost); a Milvus server adds a network hop but
indexes and searches in its own processes.

    python bench/milvus_scale.py                  # 10k and 100k
    python bench/milvus_scale.py --sizes 10000

Writes JSON to bench/results/milvus_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from retrieval_scale import DIMENSION, clustered, recall

from machine_facts import with_machine
from kbqa.vector_backends import (IndexChoice, VectorDelta, VectorStoreConfig, new_meta,
                                  open_backend)
from kbqa.vector_backends.faiss_backend import FaissBackend

RESULTS = Path(__file__).resolve().parent / "results"


def latencies(backend, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query wall time (ms) and the returned ids, one query at a time."""
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        hits = backend.search(query, k)
        times.append((time.perf_counter() - started) * 1000)
        found.append([chunk_id for chunk_id, _ in hits] + [-1] * (k - len(hits)))
    return np.asarray(times), np.asarray(found)


def percentiles(times: np.ndarray) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(times, 50)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2)}


def wait_for_index(backend, timeout_s: float) -> float:
    """Seconds until every data file of the collection has its index file.

    Milvus Lite builds a segment's HNSW index in a background thread after a flush, and its
    describe_index reports every row as indexed regardless; the index files on disk tell.
    """
    folder = Path(backend.uri, "collections", backend.collection, "partitions")
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        segments = {path.stem for path in folder.glob("*/data/*.parquet")}
        indexed = {path.name.split(".")[0] for path in folder.glob("*/indexes/*.idx")}
        if segments and segments <= indexed:
            return time.perf_counter() - started
        time.sleep(0.2)
    return float("nan")


def faiss_row(ids: np.ndarray, data: np.ndarray, queries: np.ndarray, k: int,
              folder: Path) -> tuple[dict, np.ndarray]:
    backend = FaissBackend(folder, DIMENSION, "bench")
    started = time.perf_counter()
    backend.stage(VectorDelta(added_ids=ids.tolist(), added_vectors=[data]), 1, IndexChoice("flat"))
    backend.publish(1)
    insert_s = time.perf_counter() - started
    times, exact = latencies(backend, queries, k)
    return {"store": "faiss flat", "chunks": len(data), "insert_rows_per_s": round(len(data) / insert_s),
            **percentiles(times), "recall@10": 1.0}, exact


def milvus_row(ids: np.ndarray, data: np.ndarray, queries: np.ndarray, exact: np.ndarray,
               k: int, folder: Path, index_timeout_s: float) -> dict:
    meta = new_meta(VectorStoreConfig("milvus"), "bench")
    backend = open_backend(folder, meta, DIMENSION, "bench", VectorStoreConfig("milvus"))
    backend.load(0, 0)  # creates the collection
    started = time.perf_counter()
    backend.stage(VectorDelta(added_ids=ids.tolist(), added_vectors=[data]), 1, IndexChoice())
    backend.publish(1)
    insert_s = time.perf_counter() - started
    during, _ = latencies(backend, queries[:20], k)
    indexing_s = wait_for_index(backend, index_timeout_s)
    times, found = latencies(backend, queries, k)
    small = []
    rng = np.random.default_rng(1)
    for generation in range(2, 12):
        removed = [int(i) for i in rng.choice(ids, 10, replace=False)]
        started = time.perf_counter()
        backend.stage(VectorDelta(removed=removed, added_ids=removed,
                                  added_vectors=[data[np.asarray(removed) - 1]]), generation,
                      IndexChoice())
        backend.publish(generation)
        small.append((time.perf_counter() - started) * 1000)
    backend.close()
    started = time.perf_counter()
    reopened = open_backend(folder, meta, DIMENSION, "bench", VectorStoreConfig("milvus"))
    reopened.load(12, len(data))
    reopen_s = time.perf_counter() - started
    reopened.close()
    return {"store": "milvus lite", "chunks": len(data),
            "insert_rows_per_s": round(len(data) / insert_s), **percentiles(times),
            "recall@10": round(recall(found, exact), 4),
            "p50_ms_while_indexing": percentiles(during)["p50_ms"],
            "indexing_s": round(indexing_s, 1), "small_write_p50_ms": round(float(np.median(small)), 1),
            "reopen_s": round(reopen_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--index-timeout", type=float, default=600.0,
                        help="seconds to wait for Milvus Lite's background index build")
    args = parser.parse_args()

    import milvus_lite
    import pymilvus

    print(f"pymilvus {pymilvus.__version__}, milvus-lite {milvus_lite.__version__}, "
          f"{os.cpu_count()} cores (shared), {DIMENSION}-d, {args.queries} single queries, k={args.k}")
    rows: list[dict] = []
    for size in args.sizes:
        data, queries = clustered(size, args.queries)
        ids = np.arange(1, size + 1, dtype=np.int64)
        with tempfile.TemporaryDirectory(prefix="kbqa-milvus-bench-") as tmp:
            row, exact = faiss_row(ids, data, queries, args.k, Path(tmp))
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
            # Search results are ids; FAISS's exact answer is the reference for recall.
            row = milvus_row(ids, data, queries, exact, args.k, Path(tmp), args.index_timeout)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)

    header = (f"{'store':<12} {'chunks':>7} {'insert/s':>9} {'p50 ms':>7} {'p95 ms':>7} "
              f"{'recall@10':>9} {'p50 indexing':>12} {'index s':>7} {'10-row write ms':>15} "
              f"{'reopen s':>8}")
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        print(f"{row['store']:<12} {row['chunks']:>7} {row['insert_rows_per_s']:>9} "
              f"{row['p50_ms']:>7} {row['p95_ms']:>7} {row['recall@10']:>9} "
              f"{row.get('p50_ms_while_indexing', '-'):>12} {row.get('indexing_s', '-'):>7} "
              f"{row.get('small_write_p50_ms', '-'):>15} {row.get('reopen_s', '-'):>8}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "milvus_scale.json"
    out.write_text(json.dumps(with_machine({"rows": rows, "dimension": DIMENSION, "queries": args.queries,
                               "k": args.k, "pymilvus": pymilvus.__version__,
                               "milvus_lite": milvus_lite.__version__,
                               "cpu_note": "2 cores, shared with other jobs when measured: "
                                           "indicative only"}), indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
