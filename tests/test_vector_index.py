"""Index types: auto choice by size, exact types agree, switching and updating keep the KB right."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from kbqa.kb.store import KnowledgeBase
from kbqa.vector_backends.faiss_index import build, choose_type, kind_of, updated
from tests.test_store import fake_embeddings

# Real small data: short Chinese sentences embedded by the tests' bigram-hash embedder.
TEXTS = [f"第{i}条：{city}的{thing}在{year}年被列入名录。"
         for i, (city, thing, year) in enumerate(
             (c, t, 1980 + (n * 7) % 40)
             for n, (c, t) in enumerate((c, t) for c in ("杭州", "北京", "西安", "成都", "广州",
                                                         "南京", "苏州", "洛阳")
                                        for t in ("古桥", "寺庙", "园林", "城墙", "茶园",
                                                  "石窟", "书院", "码头")))]
QUERIES = ["杭州的园林", "西安城墙", "成都茶园在哪一年", "洛阳石窟", "苏州书院名录"]


def unit_vectors(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_auto_picks_flat_for_small_and_ivf_for_large_bases() -> None:
    assert choose_type("auto", 10) == "flat"
    assert choose_type("auto", 99_999) == "flat"
    assert choose_type("auto", 100_000) == "ivf"
    assert choose_type("auto", 10, ivf_min_chunks=5) == "ivf"
    # Hysteresis: an IVF base shrinking just below the threshold is not rebuilt as Flat.
    assert choose_type("auto", 90_000, current="ivf") == "ivf"
    assert choose_type("auto", 70_000, current="ivf") == "flat"
    assert choose_type("hnsw", 10) == "hnsw"  # an explicit type always wins
    with pytest.raises(ValueError):
        choose_type("annoy", 10)  # type: ignore[arg-type]


def test_exact_ivf_equals_flat_and_updates_in_place() -> None:
    vectors, ids = unit_vectors(800), np.arange(1000, 1800)
    flat = build("flat", ids, vectors, 32)
    ivf = updated(flat, np.zeros(0, np.int64), np.zeros(0, np.int64),
                  np.zeros((0, 32), np.float32), "ivf")
    assert kind_of(ivf) == "ivf" and ivf.ntotal == 800 and ivf.nprobe < ivf.nlist
    ivf.nprobe = ivf.nlist  # probing every list makes IVF exact
    queries = unit_vectors(10, seed=1)
    assert np.array_equal(flat.search(queries, 10)[1], ivf.search(queries, 10)[1])
    # Remove and add in place (same type, no retraining); reconstruct follows the ids.
    smaller = updated(ivf, np.array([1000, 1001]), np.array([5]), vectors[:1], "ivf")
    assert smaller.nlist == ivf.nlist and smaller.ntotal == 799
    assert np.allclose(smaller.reconstruct(5), vectors[0])
    with pytest.raises(RuntimeError):
        smaller.reconstruct(1000)
    assert ivf.ntotal == 800  # the base readers hold is untouched


def test_hnsw_removal_rebuilds_and_survives_serialization() -> None:
    vectors, ids = unit_vectors(300), np.arange(300)
    hnsw = build("hnsw", ids, vectors, 32)
    fewer = updated(hnsw, np.array([0, 1, 2]), np.zeros(0, np.int64),
                    np.zeros((0, 32), np.float32), "hnsw")
    loaded = faiss.deserialize_index(faiss.serialize_index(fewer))
    assert kind_of(loaded) == "hnsw" and loaded.ntotal == 297
    top = loaded.search(vectors[10:11], 1)[1][0][0]
    assert top == 10 and not set(loaded.search(vectors[:3], 5)[1].ravel()) & {0, 1, 2}


def ingest_texts(kb: KnowledgeBase) -> None:
    kb.add_texts(TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))])


def ranked_keys(kb: KnowledgeBase) -> list[list[str]]:
    return [[doc.id for doc in kb.similarity_search(query, k=8)] for query in QUERIES]


def test_kb_switches_type_by_size_and_setting_with_equal_exact_results(tmp_path: Path) -> None:
    with KnowledgeBase.create(tmp_path, "flat", fake_embeddings()) as flat_kb:
        ingest_texts(flat_kb)
        assert flat_kb.index_kind == "flat"
        expected = ranked_keys(flat_kb)

    with KnowledgeBase.create(tmp_path, "grows", fake_embeddings()) as kb:
        kb.ivf_min_chunks = 40  # auto crosses to IVF at 40 chunks here
        kb.add_texts(TEXTS[:30], ids=[f"t{i}" for i in range(30)])
        assert kb.index_kind == "flat"
        kb.add_texts(TEXTS[30:], ids=[f"t{i}" for i in range(30, len(TEXTS))])
        assert kb.index_kind == "ivf"
        kb._vectors.index.nprobe = kb._vectors.index.nlist  # exact, to compare with flat
        assert ranked_keys(kb) == expected
        kb.delete(["t0", "t1"])  # removal stays IVF, in place
        assert kb.index_kind == "ivf" and kb.chunk_count == len(TEXTS) - 2

    # Reopening with an explicit type converts at the next write, keeping results (both exact).
    with KnowledgeBase.open(tmp_path, "flat", fake_embeddings(), index_type="ivf") as kb:
        assert kb.index_kind == "flat"
        kb.rebuild_index()
        assert kb.index_kind == "ivf"
    with KnowledgeBase.open(tmp_path, "flat", fake_embeddings()) as kb:
        assert kb.index_kind == "ivf"  # persisted; readers need no setting
        kb._vectors.index.nprobe = kb._vectors.index.nlist
        assert ranked_keys(kb) == expected
        assert kb.cosine_scores(kb.query_vector(QUERIES[0]), [1, 999_999]).keys() == {1}
