"""BM25 from persisted term counts: equals bm25s, survives reopening, follows writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import bm25s
import numpy as np
import pytest

import kbqa.retrieval.bm25 as retrieval
from kbqa.kb.lexical import (TOKENIZER_VERSION, decode_row, encode_row, query_tokens,
                             searchable_text, term_id, term_ids, text_term_ids, tokenize)
from kbqa.retrieval.bm25 import BM25_B, BM25_K1, Bm25Index, bm25_index
from kbqa.retrieval.search import search
from kbqa.kb.manifest import DB_FILENAME
from kbqa.kb.store import KnowledgeBase
from tests.test_retrieval import PASSAGES
from tests.test_retrieval import kb  # noqa: F401  (the shared knowledge-base fixture)
from tests.test_store import fake_embeddings, write

MORE = {
    "panda.txt": "大熊猫主要生活在四川、陕西和甘肃的山区竹林中，以竹子为食。",
    "silk.txt": "丝绸之路是古代连接中国与地中海的商路，西安是它的起点。杭州也产丝绸。",
}
QUERIES = ["杭州西湖", "义武节度使是谁", "长征五号 2016年", "西湖西湖龙井", "GPT 量子"]


def reference_scores(kb: KnowledgeBase, query: str) -> dict[int, float]:
    """bm25s (Lucene BM25, our k1 and b) over the live chunks, tokenised afresh from their texts
    with their file names (kbqa.kb.lexical.searchable_text)."""
    _, ids, rows = kb.lexical_rows(-1)
    texts = kb.get_chunks(ids.tolist())
    model = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    model.index([tokenize(searchable_text(texts[int(i)].page_content, texts[int(i)].metadata))
                 for i in ids], show_progress=False)
    known = [token for token in query_tokens(query) if token in model.vocab_dict]
    scores = model.get_scores(known) if known else np.zeros(len(ids))
    return {int(i): float(s) for i, s in zip(ids, scores)}


def live_scores(index: Bm25Index, query: str) -> dict[int, float]:
    scores = index.scores(query)
    return {int(i): float(scores[p]) for p, i in enumerate(index.chunk_ids) if index.alive[p]}


def assert_matches_reference(kb: KnowledgeBase, index: Bm25Index) -> None:
    for query in QUERIES:
        ours, theirs = live_scores(index, query), reference_scores(kb, query)
        assert ours.keys() == theirs.keys()
        assert np.allclose([ours[i] for i in theirs], list(theirs.values()), rtol=1e-4, atol=1e-5)


def test_term_rows_round_trip_exactly() -> None:
    length, terms, counts = encode_row("西湖西湖，GPT-4 与 ＧＰＴ")
    decoded_terms, decoded_counts = decode_row(terms, counts)
    assert len(decoded_terms) == len(decoded_counts)  # version 1's layout: older kbqa reads it
    assert length == 11  # 西 湖 西 湖 西湖 湖西 西湖 gpt 4 与 gpt
    found = dict(zip(decoded_terms.tolist(), decoded_counts.tolist()))
    assert found == {term_id("西"): 2, term_id("湖"): 2, term_id("西湖"): 2, term_id("湖西"): 1,
                     term_id("gpt"): 2, term_id("4"): 1, term_id("与"): 1}
    assert term_id("西湖") != term_id("湖西") and term_id("a") != term_id("b")


@pytest.mark.parametrize("text", [*PASSAGES.values(), *MORE.values(), "", "abc", "中",
                                  "ＡＢＣ１２３ 价格¥1,999，GPU显存24GB", "𠀀𠀁丽 豈更 〇", "中文 english 混合 2024年"])
def test_vectorised_term_ids_equal_the_token_path(text: str) -> None:
    """Ingest counts terms from code points; queries and older rows go through tokenize()."""
    assert np.array_equal(np.sort(text_term_ids(text)), np.sort(term_ids(tokenize(text))))


def test_scores_equal_bm25s(kb: KnowledgeBase) -> None:
    assert_matches_reference(kb, bm25_index(kb))


def test_reopened_base_scores_from_stored_counts_without_retokenising(
        kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = live_scores(bm25_index(kb), "杭州西湖")
    with KnowledgeBase.open(kb.folder.parent, kb.name, fake_embeddings()) as reopened:
        monkeypatch.setattr(retrieval, "term_counts", lambda text: pytest.fail("re-tokenised"))
        assert live_scores(bm25_index(reopened), "杭州西湖") == expected


def test_incremental_update_reads_only_new_chunks_and_equals_a_fresh_index(
        kb: KnowledgeBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = bm25_index(kb)
    last_seen = int(first.chunk_ids[-1])
    for name, text in MORE.items():
        write(tmp_path / "more" / name, text)
    kb.ingest([tmp_path / "more"])
    kb.remove_document(tmp_path / "docs" / "tea.txt")

    reads: list[int] = []
    original = KnowledgeBase.lexical_rows
    monkeypatch.setattr(KnowledgeBase, "lexical_rows",
                        lambda self, after: reads.append(after) or original(self, after))
    updated = bm25_index(kb)
    assert reads == [last_seen] and updated is not first
    assert updated._segments[0] is first._segments[0]  # old postings shared, not rebuilt
    assert int(updated.alive.sum()) == len(PASSAGES) - 1 + len(MORE)
    assert_matches_reference(kb, updated)
    fresh = Bm25Index().caught_up(kb)
    for query in QUERIES:
        assert live_scores(updated, query) == pytest.approx(live_scores(fresh, query))
    assert "tea.txt" not in [d.metadata["filename"] for d in search(kb, "龙井茶", mode="bm25")]
    assert search(kb, "大熊猫 竹子", mode="bm25", k=1)[0].metadata["filename"] == "panda.txt"
    # The previous generation's object is untouched for searches still running on it.
    assert int(first.alive.sum()) == len(PASSAGES)


def test_worn_out_index_is_rebuilt(kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    bm25_index(kb)
    monkeypatch.setattr(retrieval, "BM25_MAX_DEAD_SHARE", 0.1)
    kb.delete([doc.id for doc in kb.similarity_search("西湖", k=1)])
    rebuilt = bm25_index(kb)
    assert len(rebuilt.chunk_ids) == len(PASSAGES) - 1 and rebuilt.alive.all()


def test_base_without_term_table_falls_back_then_backfills(kb: KnowledgeBase,
                                                           tmp_path: Path) -> None:
    db = sqlite3.connect(kb.folder / DB_FILENAME)
    db.executescript("DROP TRIGGER bm25_terms_follow_chunks; DROP TABLE bm25_terms;")
    db.close()
    with KnowledgeBase.open(kb.folder.parent, kb.name, fake_embeddings()) as old:
        assert search(old, "义武节度使", mode="bm25", k=1)[0].metadata["filename"] == "wang.txt"
        old.ingest([write(tmp_path / "new" / "panda.txt", MORE["panda.txt"])])  # a write backfills
        _, ids, rows = old.lexical_rows(-1)
        assert len(rows) == len(ids) == len(PASSAGES) + 1
        assert all(text is None for *_, text in rows)
        assert_matches_reference(old, bm25_index(old))


def test_rows_from_an_older_tokenizer_are_counted_again_not_mixed(kb: KnowledgeBase) -> None:
    """A base written by kbqa with tokenizer version 1 (bigram rows, no `tokenizer` column)
    scores like a fresh one, and its rows are rewritten once at the next write."""
    db = sqlite3.connect(kb.folder / DB_FILENAME)
    rows = []
    for chunk_id, text in db.execute("SELECT id, text FROM chunks").fetchall():
        bigrams = [token for token in tokenize(text) if len(token) == 2]
        terms, counts = np.unique(term_ids(bigrams), return_counts=True)
        rows.append((chunk_id, len(bigrams), terms.tobytes(), counts.astype("<u2").tobytes()))
    db.executescript("DROP TABLE bm25_terms; CREATE TABLE bm25_terms (chunk_id INTEGER PRIMARY "
                     "KEY, length INTEGER NOT NULL, terms BLOB NOT NULL, counts BLOB NOT NULL);")
    db.executemany("INSERT INTO bm25_terms VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    with KnowledgeBase.open(kb.folder.parent, kb.name, fake_embeddings()) as old:
        assert all(terms is None and text for _, _, terms, _, text in old.lexical_rows(-1)[2])
        assert_matches_reference(old, bm25_index(old))
        # the next write rewrites the old rows once, so later loads need no recount
        old.ingest([write(kb.folder.parent / "more" / "extra.txt", "新增的文档，内容与年假无关。")])
        stored = old.lexical_rows(-1)[2]
        assert all(terms is not None and text is None for _, _, terms, _, text in stored)
        db = sqlite3.connect(kb.folder / DB_FILENAME)
        versions = {v for (v,) in db.execute("SELECT DISTINCT tokenizer FROM bm25_terms")}
        db.close()
        assert versions == {TOKENIZER_VERSION}
        assert_matches_reference(old, bm25_index(old))
