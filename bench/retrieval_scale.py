"""Vector search at scale: FAISS Flat vs IVF vs HNSW at 10k and 100k chunks.

Vectors are synthetic but clustered like real embeddings (unit vectors around n/100 random
centres, each mixing two topics), 512-d like the embedded USE embedder; queries are
perturbed copies of stored vectors, like a question near its passage. Uniform random vectors
would make every approximate index look bad (no neighbourhood structure), so recall here is
indicative only: check it on real embeddings before trusting an approximate default.

For each size and type it prints build time, single-query p50/p95 latency (one query at a time,
as a user asks), recall@10 against the exact Flat answer, and memory per chunk (serialized
index bytes / chunks: FAISS keeps the same structures in memory, so it is the resident cost).
IVF and HNSW are also shown at several search depths (nprobe, efSearch), which is how their
defaults were picked.

    python bench/retrieval_scale.py                       # 10k and 100k, all types
    python bench/retrieval_scale.py --sizes 10000 --types flat ivf

Writes JSON to bench/results/retrieval_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

from machine_facts import with_machine
from kbqa.vector_backends import faiss_index as vector_index
from kbqa.vector_backends.faiss_index import build, search

RESULTS = Path(__file__).resolve().parent / "results"
DIMENSION = 512


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n stored vectors mixing two of n/100 topics each; queries are perturbed stored vectors.

    Mixing topics makes neighbourhoods overlap across clusters, as real embeddings do; with
    separate clusters every index reaches recall 1.0 and the comparison says nothing.
    """
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((max(2, n // 100), DIMENSION)))
    data = unit(centres[rng.integers(0, len(centres), n)]
                + rng.uniform(0.2, 0.8, (n, 1)).astype(np.float32)
                * centres[rng.integers(0, len(centres), n)]
                + rng.standard_normal((n, DIMENSION)).astype(np.float32) * 0.06)
    picked = data[rng.integers(0, n, queries)]
    return data, unit(picked + rng.standard_normal(picked.shape).astype(np.float32) * 0.03)


def latencies_ms(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query wall time (ms) searching one query at a time, and the returned ids."""
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = search(index, query[None, :], k)
        times.append((time.perf_counter() - started) * 1000)
        found.append(ids[0])
    return np.asarray(times), np.asarray(found)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def measure(kind: str, data: np.ndarray, queries: np.ndarray, exact: np.ndarray | None,
            k: int) -> tuple[dict, faiss.Index, np.ndarray]:
    started = time.perf_counter()
    index = build(kind, np.arange(len(data), dtype=np.int64), data, DIMENSION)
    build_s = time.perf_counter() - started
    search(index, queries[:1], k)  # warm up
    times, found = latencies_ms(index, queries, k)
    row = {"type": kind, "chunks": len(data), "build_s": round(build_s, 2),
           "p50_ms": round(float(np.percentile(times, 50)), 3),
           "p95_ms": round(float(np.percentile(times, 95)), 3),
           "recall@10": round(recall(found, exact), 4) if exact is not None else 1.0,
           "bytes_per_chunk_file": round(len(faiss.serialize_index(index)) / len(data), 1)}
    if kind == "ivf":
        row["nlist"], row["nprobe"] = index.nlist, index.nprobe
    return row, index, found


def sweep(index: faiss.Index, queries: np.ndarray, exact: np.ndarray, k: int) -> list[dict]:
    """Recall and latency at several search depths: IVF nprobe, or HNSW efSearch."""
    rows = []
    if isinstance(index, faiss.IndexIVF):
        settings = [("nprobe", max(1, index.nlist // fraction)) for fraction in (32, 16, 8, 4)]
    else:
        settings = [("efSearch", ef) for ef in (64, 128, 256, 512)]
    for name, value in settings:
        if name == "nprobe":
            index.nprobe = value
        else:
            faiss.downcast_index(index.index).hnsw.efSearch = value
        times, found = latencies_ms(index, queries, k)
        rows.append({name: value, "p50_ms": round(float(np.percentile(times, 50)), 3),
                     "recall@10": round(recall(found, exact), 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--types", nargs="+", default=["flat", "ivf", "hnsw"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    rows: list[dict] = []
    sweeps: dict[str, list[dict]] = {}
    print(f"faiss {faiss.__version__}, {os.cpu_count()} cores, {DIMENSION}-d, "
          f"{args.queries} single queries (one thread each), k={args.k}")
    for size in args.sizes:
        data, queries = clustered(size, args.queries)
        exact = None
        for kind in ["flat"] + [t for t in args.types if t != "flat"]:
            row, index, found = measure(kind, data, queries, exact, args.k)
            if kind == "flat":
                exact = found
            if kind in args.types:
                rows.append(row)
                print(" ".join(f"{key}={value}" for key, value in row.items()), flush=True)
            if kind != "flat":
                sweeps[f"{kind} {size}"] = sweep(index, queries, exact, args.k)
            del index

    header = (f"{'type':<5} {'chunks':>7} {'build s':>8} {'p50 ms':>7} {'p95 ms':>7} "
              f"{'recall@10':>9} {'B/chunk file':>12}")
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        print(f"{row['type']:<5} {row['chunks']:>7} {row['build_s']:>8} {row['p50_ms']:>7} "
              f"{row['p95_ms']:>7} {row['recall@10']:>9} {row['bytes_per_chunk_file']:>12}")
    print(f"\nSearch depth sweeps (defaults: IVF nprobe = nlist/"
          f"{vector_index.IVF_PROBE_FRACTION}, HNSW efSearch = {vector_index.HNSW_EF_SEARCH}):")
    for label, rows_of in sweeps.items():
        for item in rows_of:
            depth = ", ".join(f"{key}={value}" for key, value in item.items()
                              if key not in ("p50_ms", "recall@10"))
            print(f"  {label:<11} {depth:<14} p50 {item['p50_ms']:>7} ms  "
                  f"recall@10 {item['recall@10']}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "retrieval_scale.json"
    out.write_text(json.dumps(with_machine({"rows": rows, "depth_sweeps": sweeps, "dimension": DIMENSION,
                               "queries": args.queries, "k": args.k,
                               "cpu_note": "2 cores, shared with another job when measured"}),
                              indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
