"""Reranking hook: a reranker reorders candidates; local cross-encoder folders load offline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from kbqa.errors import ModelError
from kbqa.retrieval.rerank import CrossEncoderReranker, load_reranker
from kbqa.retrieval.retriever import KnowledgeBaseRetriever
from kbqa.retrieval.search import search
from kbqa.kb.store import KnowledgeBase
from tests.test_store import fake_embeddings

TEXTS = {"lake": "西湖在杭州，湖边有苏堤和白堤。", "tea": "龙井茶产于杭州西湖一带的山中。",
         "city": "杭州是浙江省的省会城市。"}


class KeywordReranker:
    """Scores a passage by how often it mentions a keyword: a reranker whose answer we know."""

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.calls: list[int] = []

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        self.calls.append(len(passages))
        return np.asarray([passage.count(self.keyword) for passage in passages], dtype=np.float32)


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeBase:
    with KnowledgeBase.create(tmp_path, "kb", fake_embeddings()) as base:
        base.add_texts(list(TEXTS.values()), ids=list(TEXTS))
        yield base


def test_reranker_reorders_candidates(kb: KnowledgeBase) -> None:
    plain = search(kb, "杭州西湖", mode="bm25", k=3)
    reranker = KeywordReranker("省")
    docs = KnowledgeBaseRetriever(kb=kb, mode="bm25", k=2, reranker=reranker).invoke("杭州西湖")
    assert plain[0].id == "tea" and docs[0].id == "city"
    assert docs[0].metadata["score"] == docs[0].metadata["rerank_score"] == 2.0
    assert reranker.calls == [len(plain)]  # every candidate scored once, in one call
    assert all(doc.metadata["rerank_score"] is None for doc in plain)


def test_load_reranker_setting(tmp_path: Path) -> None:
    assert load_reranker(None) is None and load_reranker("none") is None
    with pytest.raises(ModelError, match="cross-encoder"):
        load_reranker(str(tmp_path))


def test_local_cross_encoder_folder_scores_pairs(tmp_path: Path) -> None:
    """A tiny randomly initialised BERT cross-encoder, saved and reloaded offline."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    chars = sorted(set("".join(TEXTS.values()) + "杭州西湖"))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n",
                     encoding="utf-8")
    folder = tmp_path / "tiny-reranker"
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    config = BertConfig(vocab_size=5 + len(chars), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)

    reranker = load_reranker(str(folder))
    assert isinstance(reranker, CrossEncoderReranker)
    scores = reranker.score("杭州西湖", list(TEXTS.values()))
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert np.allclose(scores, reranker.score("杭州西湖", list(TEXTS.values())))
    assert reranker.score("杭州西湖", []).shape == (0,)
