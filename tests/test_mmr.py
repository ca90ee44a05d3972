"""MMR: hand-made vectors where the plain ranking is redundant, and the option through search()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbqa.config import load_settings
from kbqa.retrieval.ranking import mmr_select
from kbqa.retrieval.retriever import KnowledgeBaseRetriever
from kbqa.retrieval.search import search
from kbqa.kb.store import KnowledgeBase
from tests.test_store import fake_embeddings


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# 1 and 2 are near-duplicates; 3 is less relevant but says something else.
RANKED = [(1, 0.90), (2, 0.88), (3, 0.60), (4, 0.10)]
VECTORS = {1: unit(1, 0, 0), 2: unit(1, 0.05, 0), 3: unit(0, 1, 0), 4: unit(0, 0, 1)}


def test_mmr_on_hand_made_vectors() -> None:
    assert [i for i, _ in mmr_select(RANKED, VECTORS, 2, balance=1.0)] == [1, 2]
    assert mmr_select(RANKED, VECTORS, 2, balance=0.5) == [(1, 0.90), (3, 0.60)]
    assert [i for i, _ in mmr_select(RANKED, VECTORS, 4, balance=0.5)] == [1, 3, 4, 2]
    # A candidate without a vector is never considered redundant.
    assert [i for i, _ in mmr_select(RANKED, {1: VECTORS[1]}, 2, balance=0.5)] == [1, 2]
    assert mmr_select([], VECTORS, 3, balance=0.5) == []


def test_mmr_through_search_drops_duplicate_chunks(tmp_path: Path, vector_store) -> None:
    texts = ["西湖位于杭州市西部，是著名的风景名胜区。", "西湖位于杭州市西部，是著名的风景名胜区！",
             "龙井茶产于杭州西湖周围的群山，属于绿茶。", "长征五号在海南文昌首次发射。"]
    with KnowledgeBase.create(tmp_path, "kb", fake_embeddings(), vector_store=vector_store) as kb:
        kb.add_texts(texts, ids=["a", "a2", "tea", "rocket"])
        plain = [d.id for d in search(kb, "西湖位于杭州", mode="bm25", k=2)]
        diverse = KnowledgeBaseRetriever(kb=kb, mode="bm25", k=2, mmr=0.5).invoke("西湖位于杭州")
    assert sorted(plain) == ["a", "a2"]
    assert [d.id for d in diverse][1] == "tea" and [d.metadata["rank"] for d in diverse] == [1, 2]


def test_mmr_setting_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().retrieval.mmr is None
    monkeypatch.setenv("KBQA_MMR", "0.7")
    assert load_settings().retrieval.mmr == 0.7
    monkeypatch.setenv("KBQA_INDEX_TYPE", "hnsw")
    assert load_settings().kb.index_type == "hnsw"
    monkeypatch.setenv("KBQA_MMR", "1.5")
    with pytest.raises(Exception, match="mmr"):
        load_settings()
