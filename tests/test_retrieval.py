"""Retrieval: tokenisation, RRF, BM25 on Chinese, the LangChain retriever and its threshold."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda

from kbqa.kb.lexical import tokenize
from kbqa.retrieval.bm25 import bm25_index
from kbqa.retrieval.ranking import reciprocal_rank_fusion
from kbqa.retrieval.retriever import KnowledgeBaseRetriever
from kbqa.retrieval.search import DEFAULT_MIN_COVERAGE, DEFAULT_MODE, search
from kbqa.kb.lexical import query_tokens
from kbqa.kb.store import KnowledgeBase
from tests.test_store import fake_embeddings, write

PASSAGES = {
    "wang.txt": "王处直，字允明，京兆万年人，晚唐、五代初期的义武节度使。他的家族世代隶属神策军。",
    "lake.txt": "西湖位于浙江省杭州市西部，湖中有孤山、白堤、苏堤等名胜，2011年列入世界遗产名录。",
    "tea.txt": "龙井茶是中国十大名茶之一，产于杭州西湖周围的群山之中，属于绿茶。",
    "rocket.txt": "长征五号是中国新一代大型运载火箭，于2016年在海南文昌航天发射场首次发射。",
}


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeBase:
    folder = tmp_path / "docs"
    for name, text in PASSAGES.items():
        write(folder / name, text)
    with KnowledgeBase.create(tmp_path / "kbs", "kb", fake_embeddings()) as base:
        base.ingest([folder])
        yield base


def filenames(docs) -> list[str]:
    return [d.metadata["filename"] for d in docs]


def test_tokenize_characters_bigrams_and_ascii_words() -> None:
    assert tokenize("王处直的字") == ["王", "处", "直", "的", "字", "王处", "处直", "直的", "的字"]
    assert tokenize("GPT-4 模型，ＡＢＣ１２３！") == ["gpt", "4", "模", "型", "模型", "abc123"]
    assert tokenize("猫") == ["猫"]
    assert tokenize("？！。") == []


def test_query_tokens_leave_out_question_words_but_not_names() -> None:
    assert query_tokens("西湖在哪里？") == tokenize("西湖在")
    assert query_tokens("为什么叫什么名字") == tokenize("叫 名字")
    assert query_tokens("哪吒是谁？") == tokenize("哪吒")  # 哪吒 is a name, 是谁 a question
    assert query_tokens("多少") == []


def test_query_tokens_leave_out_how_many_how_long_and_final_particles() -> None:
    assert query_tokens("午休时间是几点到几点？") == tokenize("午休时间是 到")
    assert query_tokens("年假需要提前几天申请？") == tokenize("年假需要提前 申请")
    assert query_tokens("一线城市指的是哪几个城市？") == tokenize("一线城市指的是 城市")
    assert query_tokens("R2能越过多高的障碍？") == tokenize("R2能越过 的障碍")
    assert query_tokens("试用期员工能否远程办公吗？") == tokenize("试用期员工 远程办公")
    assert query_tokens("经销商价呢？") == tokenize("经销商价")
    assert query_tokens("派西在家里排第几？") == tokenize("派西在家里排")
    # words that only look like questions stay: 几乎, 几何, 茶几, 吗啡, 多伦多大学, 多重国籍
    for text in ("几乎所有的几何题", "茶几上的吗啡", "多伦多大学", "多重国籍"):
        assert query_tokens(text) == tokenize(text)


def test_the_gate_keeps_a_handbook_rule_asked_with_how_many(tmp_path: Path) -> None:
    """Before, 几点 / 几天 counted as question terms no passage holds, and the gate refused these."""
    folder = tmp_path / "docs"
    write(folder / "handbook.txt", "公司实行标准工时制，上班时间为上午9:00至下午6:00，其中12:00至13:30为午休时间。")
    write(folder / "leave.txt", "年假须提前3个工作日在内部系统中申请。当年未休完的年假可顺延至次年3月31日。")
    write(folder / "travel.txt", "国内出差住宿标准：一线城市（北京、上海、广州、深圳）每晚不超过600元。")
    write(folder / "it.txt", "员工电脑须开启全盘加密，密码每90天更换一次，不得与他人共用账号。")
    with KnowledgeBase.create(tmp_path / "kbs", "kb", fake_embeddings()) as base:
        base.ingest([folder])
        for question, source in (("午休时间是几点到几点？", "handbook.txt"),
                                 ("年假需要提前几天申请？", "leave.txt"),
                                 ("一线城市指的是哪几个城市？", "travel.txt")):
            kept = search(base, question, mode="bm25", k=1, min_coverage=DEFAULT_MIN_COVERAGE)
            assert filenames(kept) == [source], question


def test_rrf_on_hand_made_rankings() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    assert [item for item, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1][1] == pytest.approx(1 / 63 + 1 / 61)
    # Equal scores: the item that reached the better rank in any list comes first.
    assert [item for item, _ in reciprocal_rank_fusion([[7, 8], [8, 7]])] == [7, 8]
    assert reciprocal_rank_fusion([[], []]) == []


def test_bm25_finds_exact_chinese_phrase(kb: KnowledgeBase) -> None:
    docs = search(kb, "义武节度使", mode="bm25", k=2)
    assert filenames(docs)[0] == "wang.txt"
    assert docs[0].metadata["bm25_score"] > 0 and docs[0].metadata["dense_score"] is None
    assert search(kb, "量子计算机", mode="bm25") == []  # no shared bigram: nothing, not noise


def test_bm25_index_follows_generation(kb: KnowledgeBase, tmp_path: Path) -> None:
    first = bm25_index(kb)
    assert bm25_index(kb) is first
    kb.ingest([write(tmp_path / "more" / "panda.txt", "大熊猫主要生活在四川的竹林中。")])
    assert bm25_index(kb) is not first
    assert filenames(search(kb, "大熊猫", mode="bm25", k=1)) == ["panda.txt"]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_modes_return_ranked_documents_with_metadata(kb: KnowledgeBase, mode: str) -> None:
    docs = KnowledgeBaseRetriever(kb=kb, mode=mode, k=3).invoke("长征五号运载火箭在哪里首次发射？")
    assert filenames(docs)[0] == "rocket.txt"
    assert [d.metadata["rank"] for d in docs] == list(range(1, len(docs) + 1))
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    for doc in docs:
        assert isinstance(doc.metadata["chunk_id"], int)
        assert doc.metadata["source"].endswith(doc.metadata["filename"])
        if mode != "bm25":
            assert -1.0 <= doc.metadata["dense_score"] <= 1.0
        if mode != "dense":
            assert doc.metadata["bm25_score"] is not None


def test_hybrid_score_is_rrf(kb: KnowledgeBase) -> None:
    top = search(kb, "龙井茶属于什么茶？", mode="hybrid", k=1)[0]
    assert top.metadata["filename"] == "tea.txt"
    assert top.metadata["score"] == pytest.approx(2 / 61)  # first in both lists


def test_threshold_direction(kb: KnowledgeBase) -> None:
    query = "西湖里有哪些名胜？"
    for mode in ("dense", "bm25", "hybrid"):
        assert KnowledgeBaseRetriever(kb=kb, mode=mode, k=4, score_threshold=1.01).invoke(query) == []
        everything = KnowledgeBaseRetriever(kb=kb, mode=mode, k=10, score_threshold=-1.0).invoke(query)
        assert len(everything) == len(search(kb, query, mode=mode, k=10, score_threshold=None))
    dense = search(kb, query, mode="dense", k=4)
    cut = dense[1].metadata["dense_score"]
    kept = search(kb, query, mode="dense", k=4, score_threshold=cut)
    assert all(d.metadata["dense_score"] >= cut for d in kept) and len(kept) >= 2
    # In bm25 mode the threshold is still a dense cosine: bm25 hits carry it once one is set.
    assert all(d.metadata["dense_score"] is not None
               for d in search(kb, query, mode="bm25", score_threshold=-1.0))


def test_retriever_in_lcel_pipe(kb: KnowledgeBase) -> None:
    retriever = KnowledgeBaseRetriever(kb=kb, k=2)
    assert retriever.mode == DEFAULT_MODE
    chain = retriever | RunnableLambda(lambda docs: "\n".join(d.page_content for d in docs))
    assert "神策军" in chain.invoke("王处直的家族世代隶属什么军？")
    assert len(retriever.batch(["西湖", "火箭"])) == 2


def test_unknown_mode_refused(kb: KnowledgeBase) -> None:
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        search(kb, "西湖", mode="sparse")  # type: ignore[arg-type]


def test_empty_knowledge_base(tmp_path: Path) -> None:
    with KnowledgeBase.create(tmp_path, "empty", fake_embeddings()) as base:
        for mode in ("dense", "bm25", "hybrid"):
            assert search(base, "任何问题", mode=mode) == []


def test_coverage_weighs_rare_terms_by_idf(kb: KnowledgeBase) -> None:
    index = bm25_index(kb)
    text = PASSAGES["lake.txt"]
    assert index.coverage("西湖", text) == pytest.approx(1.0)
    assert index.coverage("火箭", text) == 0.0
    # 杭州 occurs in two passages, 孤山 in one: the rarer term carries more of the weight
    assert index.coverage("孤山在哪", text) > index.coverage("杭州在哪", PASSAGES["tea.txt"]) > 0
    assert index.coverage("", text) == 0.0


def test_min_coverage_turns_away_passages_missing_the_question_terms(kb: KnowledgeBase) -> None:
    question = "西湖的股票代码是多少？"  # shares only 西湖 with the knowledge base
    loose = search(kb, question, mode="bm25", k=2, min_coverage=None)
    assert set(filenames(loose)) == {"lake.txt", "tea.txt"}
    assert all(0 < d.metadata["coverage"] < DEFAULT_MIN_COVERAGE for d in loose)
    assert search(kb, question, mode="bm25", k=2, min_coverage=DEFAULT_MIN_COVERAGE) == []
    retriever = KnowledgeBaseRetriever(kb=kb, k=2, min_coverage=DEFAULT_MIN_COVERAGE)
    kept = retriever.invoke("西湖的孤山和苏堤")
    assert filenames(kept) == ["lake.txt"]
    assert kept[0].metadata["coverage"] >= DEFAULT_MIN_COVERAGE
    # dense mode computes coverage too, so the gate means the same in every mode
    assert search(kb, question, mode="dense", k=2, min_coverage=DEFAULT_MIN_COVERAGE) == []


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_the_same_passage_in_several_files_takes_one_place(tmp_path: Path, mode: str) -> None:
    """Three copies of one handbook and one other file: top-2 is the passage once plus the other
    file, not two copies (issue 15: identical chunks from different files filled the top-k)."""
    kb = KnowledgeBase.create(tmp_path / "kbs", "dups", fake_embeddings())
    text = "# 年假\n\n入职满一年的员工每年享有十天带薪年假。\n"
    copies = [write(tmp_path / "docs" / f"copy{n}.md", text) for n in range(3)]
    other = write(tmp_path / "docs" / "other.md", "# 假期\n\n员工的病假每年享有五天带薪假。\n")
    kb.ingest([*copies, other])
    docs = search(kb, "员工每年享有几天带薪年假？", mode=mode, k=2)
    assert len(docs) == 2
    assert len({d.page_content for d in docs}) == 2
    assert filenames(docs)[1] == "other.md" and filenames(docs)[0].startswith("copy")
    assert [d.metadata["rank"] for d in docs] == [1, 2]


def test_the_file_name_tells_companies_apart(tmp_path: Path) -> None:
    """Three companies' FAQs answer the same question in the same words; only the file names say
    whose is whose. Before, BM25 and the gate read the text alone: the question's company counted
    for nothing, and the gate refused outlet rows whose company stands only in the file name."""
    folder = tmp_path / "docs"
    for company, amount in (("青禾科技", 100), ("禾丰农机", 550), ("蓝鲸电器", 250)):
        write(folder / f"{company}常见问题.md", f"## 以旧换新最多抵多少钱？\n\n以旧换新最高可抵扣{amount}元。\n")
        write(folder / f"{company}售后网点.csv", "城市,地址,电话\n郑州,中原路12号,0371-5550\n")
    with KnowledgeBase.create(tmp_path / "kbs", "kb", fake_embeddings()) as base:
        base.ingest([folder])
        found = search(base, "禾丰农机以旧换新最多抵多少钱？", mode="bm25", k=1,
                       min_coverage=DEFAULT_MIN_COVERAGE)
        assert filenames(found) == ["禾丰农机常见问题.md"]
        assert "550元" in found[0].page_content
        kept = search(base, "蓝鲸电器郑州售后网点的电话是什么？", mode="bm25", k=1,
                      min_coverage=DEFAULT_MIN_COVERAGE)
        assert filenames(kept) == ["蓝鲸电器售后网点.csv"]
