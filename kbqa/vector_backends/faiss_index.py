"""FAISS index types for a knowledge base: exact Flat, IVF or HNSW, picked by size.

Why three: an exact `Flat` scan reads every vector per query (100k x 512-d = 200 MB), so its
time grows linearly with the base, while approximate indexes answer much faster
(docs/benchmarks.md §Vector stores at scale). Flat is the default up to 100k chunks because it
is exact, needs no training and updates in place. IVF is the default beyond: its training stays
affordable at that size, it supports add and remove natively (a KB update stays incremental)
and is exact when ``nprobe == nlist``. HNSW is an override only: fast queries, but the slowest
build, the lowest recall in our benchmark, and FAISS cannot remove from it, so every removal
rebuilds it.

Flat and HNSW sit inside ``IndexIDMap2`` (chunk rowids as labels, `reconstruct(id)` works); IVF
holds the ids itself, with a hash-table direct map so `reconstruct(id)` works there too.
Search parameters (`nprobe`, `efSearch`) are stored in the index file by FAISS's serializer.

Threads: FAISS parallelises a search over its queries, so a single query gains nothing from
OpenMP, and its idle workers cost a lot (a single Flat query ran slower on two threads than on
one even on an idle machine, far slower on a busy one; docs/benchmarks.md §Vector stores at
scale). `search` therefore runs one query on one thread; builds use every core. The OpenMP
thread count is per calling thread, so a search never slows down an ingest running in another
thread.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import faiss
import numpy as np

IndexType = Literal["auto", "flat", "ivf", "hnsw"]
ConcreteType = Literal["flat", "ivf", "hnsw"]
INDEX_TYPES: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")

# Exact Flat stays inside the 20 ms query budget up to this size, so auto stays exact up to it
# and moves to IVF beyond, where Flat's linear scan nears the budget (docs/benchmarks.md
# §Vector stores at scale).
AUTO_IVF_MIN_CHUNKS = 100_000
# Auto leaves IVF only below this share of the threshold, so a base hovering around it does not
# retrain at every write.
AUTO_HYSTERESIS = 0.8
# IVF: lists ~ 4 sqrt(n); probing 1/8 of them keeps recall near exact at a fraction of Flat's
# time (docs/benchmarks.md §Vector stores at scale).
IVF_PROBE_FRACTION = 8
# Retrain IVF (new centroids, new nlist) once the base has grown this much past its training size.
IVF_RETRAIN_GROWTH = 4
# HNSW: efSearch 256, because lower values lost recall and higher ones added little
# (docs/benchmarks.md §Vector stores at scale).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 256


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) like `index.search`, one thread for one query (see the module docstring)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d)
    faiss.omp_set_num_threads(1 if len(queries) == 1 else os.cpu_count() or 1)
    return index.search(queries, k)


def choose_type(requested: IndexType, count: int, *, current: ConcreteType | None = None,
                ivf_min_chunks: int = AUTO_IVF_MIN_CHUNKS) -> ConcreteType:
    """The concrete index type for `count` vectors; "auto" is Flat below `ivf_min_chunks`, else IVF
    (an IVF index already in use stays IVF down to AUTO_HYSTERESIS of the threshold)."""
    if requested not in INDEX_TYPES:
        raise ValueError(f"unknown index type {requested!r}; use one of {', '.join(INDEX_TYPES)}")
    if requested != "auto":
        return requested
    threshold = ivf_min_chunks * (AUTO_HYSTERESIS if current == "ivf" else 1.0)
    return "ivf" if count >= threshold else "flat"


def kind_of(index: faiss.Index) -> ConcreteType:
    """Which of our index types a loaded index is."""
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"


def empty_flat(dimension: int) -> faiss.Index:
    """An empty exact inner-product index (what a new knowledge base starts with)."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


def ivf_nlist(count: int) -> int:
    """Number of IVF lists: ~4 sqrt(n), at least 1, at most n/39 so k-means has data per list."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def all_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of everything in `index`, for rebuilding it as another type."""
    if index.ntotal == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, index.d), dtype=np.float32)
    if isinstance(index, faiss.IndexIVF):
        invlists = index.invlists
        ids = np.concatenate([
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(index.nlist) if invlists.list_size(i) > 0])
        return ids.astype(np.int64), index.reconstruct_batch(ids)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    return ids, faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)


def build(kind: ConcreteType, ids: np.ndarray, vectors: np.ndarray, dimension: int) -> faiss.Index:
    """A new index of `kind` holding `vectors` under `ids` (IVF is trained on these vectors)."""
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dimension)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if kind == "flat":
        index = empty_flat(dimension)
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        index = faiss.IndexIDMap2(hnsw)
    elif kind == "ivf":
        index = _trained_ivf(vectors, dimension)
    else:
        raise ValueError(f"unknown index type {kind!r}")
    if len(ids):
        index.add_with_ids(vectors, ids)
    return index


def _trained_ivf(vectors: np.ndarray, dimension: int) -> faiss.Index:
    nlist = ivf_nlist(len(vectors))
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFFlat(quantizer, dimension, nlist, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    # Deterministic centroids: the same vectors give the same index (and the same results).
    index.cp.seed = 1234
    index.train(vectors if len(vectors) else np.zeros((1, dimension), dtype=np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.nprobe = max(1, math.ceil(nlist / IVF_PROBE_FRACTION))
    return index


def _updatable(index: faiss.Index, kind: ConcreteType, has_removals: bool, count: int) -> bool:
    """Can `index` take this delta in place, or must it be rebuilt?"""
    current = kind_of(index)
    if current != kind:
        return False
    if kind == "hnsw":
        return not has_removals  # FAISS HNSW has no remove_ids
    if kind == "ivf":
        return count <= IVF_RETRAIN_GROWTH * ivf_trained_for(index)
    return True


def ivf_trained_for(index: faiss.Index) -> float:
    """The base size an IVF index's nlist was chosen for (inverse of `ivf_nlist`)."""
    return max(39 * index.nlist, (index.nlist / 4) ** 2)


def updated(base: faiss.Index, removed: np.ndarray, added_ids: np.ndarray, added: np.ndarray,
            requested: IndexType, *, rebuild: bool = False,
            ivf_min_chunks: int = AUTO_IVF_MIN_CHUNKS) -> faiss.Index:
    """A new index = `base` minus `removed` plus (`added_ids`, `added`); `base` is left untouched.

    Switches type when the size crosses the auto threshold or `requested` differs from what
    `base` is, by rebuilding from `base`'s own stored vectors (no re-embedding).
    """
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    dimension = base.d
    remaining = 0 if rebuild else base.ntotal - len(removed)
    count = remaining + len(added_ids)
    kind = choose_type(requested, count, current=None if rebuild else kind_of(base),
                       ivf_min_chunks=ivf_min_chunks)
    if not rebuild and _updatable(base, kind, len(removed) > 0, count):
        index = faiss.clone_index(base)
        if kind == "ivf":
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        if len(removed):
            index.remove_ids(np.asarray(removed, dtype=np.int64))
        if len(added_ids):
            index.add_with_ids(np.ascontiguousarray(added, dtype=np.float32),
                               np.asarray(added_ids, dtype=np.int64))
        return index
    ids, vectors = (np.zeros(0, dtype=np.int64), np.zeros((0, dimension), dtype=np.float32)) \
        if rebuild else all_vectors(base)
    if len(removed) and len(ids):
        keep = ~np.isin(ids, np.asarray(removed, dtype=np.int64))
        ids, vectors = ids[keep], vectors[keep]
    ids = np.concatenate([ids, np.asarray(added_ids, dtype=np.int64)])
    vectors = np.concatenate([vectors, np.asarray(added, dtype=np.float32).reshape(-1, dimension)])
    return build(kind, ids, vectors, dimension)
