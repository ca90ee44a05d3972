"""ChineseTextSplitter and split_elements: sentence boundaries, fallbacks, overlap, metadata."""

from __future__ import annotations

import json
import re
from itertools import pairwise

import pytest
from langchain_core.documents import Document

from kbqa.ingest import ChineseTextSplitter, split_elements

SENTENCES = [
    "入职满一年的员工每年享有10天带薪年假。",
    "年假须提前三个工作日申请！",
    "未休完的年假可以顺延吗？",
    "可以顺延至次年3月31日；",
    "逾期作废……",
    "病假需提供医院证明。",
]
END_PUNCTUATION = tuple("。！？；…，、")


def _spans(text: str, chunks: list[str]) -> list[tuple[int, int]]:
    """Where each chunk sits in `text`: chunks are in order, each starting after the last."""
    spans: list[tuple[int, int]] = []
    for chunk in chunks:
        start = text.find(chunk, spans[-1][0] + 1 if spans else 0)
        assert start >= 0, chunk
        spans.append((start, start + len(chunk)))
    return spans


def test_defaults_pack_real_chinese_text_to_the_configured_size_and_overlap() -> None:
    """ChineseTextSplitter() on real Chinese (the CMRC 2018 sample passages): the same chunks as
    the configured defaults (Settings.chunk_size / chunk_overlap), none over the size, each full
    (the next sentence would not have fitted), every non-blank character kept, and consecutive
    chunks sharing whole trailing sentences up to the overlap whenever such sentences fit."""
    from kbqa.config import load_settings
    from tests.cmrc_sample import SAMPLE

    settings = load_settings()
    size, overlap = settings.kb.chunk_size, settings.kb.chunk_overlap
    passages = [json.loads(line) for line in (SAMPLE / "docs.jsonl").read_text("utf-8").splitlines()]
    text = "".join(passage["text"] for passage in passages)
    chunks = ChineseTextSplitter().split_text(text)
    assert chunks == ChineseTextSplitter(chunk_size=size, chunk_overlap=overlap).split_text(text)
    assert len(chunks) >= len(text) // size
    assert all(0 < len(chunk) <= size for chunk in chunks)
    spans = _spans(text, chunks)
    assert spans[0][0] == 0 and not text[spans[-1][1]:].strip()
    sentence_end = re.compile(r"[。！？；…]+[”’」』）)》\"']*")
    shared = 0
    for (start, end), (next_start, next_end) in pairwise(spans):
        assert not text[end:next_start].strip()  # a gap between chunks is only whitespace
        kept = end - next_start
        assert kept <= overlap
        if kept > 0:  # the overlap is whole sentences: it starts right after a sentence end
            shared += 1
            assert text[next_start - 1] in "。！？；…”’」』）)》\"'"
        new_start = max(end, next_start)
        following = sentence_end.search(text, new_start)
        following_end = following.end() if following else len(text)
        assert (end - start) + (following_end - new_start) > size  # full: the next did not fit
        # the last sentence of this chunk could have been kept as overlap: it was
        ends = [m.end() for m in sentence_end.finditer(text, start, end) if m.end() < end]
        last = end - ends[-1] if ends else end - start
        if last <= overlap and last + (following_end - new_start) <= size:
            assert kept >= last
    assert shared >= 1


def test_default_prepends_the_heading_to_chunks_that_lack_it() -> None:
    from tests.cmrc_sample import SAMPLE

    passage = json.loads((SAMPLE / "docs.jsonl").read_text("utf-8").splitlines()[0])
    doc = Document(page_content=passage["text"], metadata={"source": "s", "heading": passage["title"]})
    chunks = ChineseTextSplitter().split_documents([doc])
    plain = ChineseTextSplitter().split_text(passage["text"])
    assert len(plain) > 1
    title = passage["title"]
    assert [chunk.page_content for chunk in chunks] == [
        t if t.startswith(title) else f"【{title}】\n{t}" for t in plain]
    assert sum(chunk.page_content.startswith(f"【{title}】\n") for chunk in chunks) >= 2


def test_chunks_are_whole_sentences_with_their_punctuation() -> None:
    text = "".join(SENTENCES)
    chunks = ChineseTextSplitter(chunk_size=30, chunk_overlap=0).split_text(text)
    assert "".join(chunks) == text
    assert all(chunk.endswith(END_PUNCTUATION) for chunk in chunks)
    assert not any(chunk.startswith(END_PUNCTUATION) for chunk in chunks)
    for chunk in chunks:  # every chunk is a run of whole sentences
        assert chunk in {
            "".join(SENTENCES[i:j]) for i in range(len(SENTENCES)) for j in range(i + 1, len(SENTENCES) + 1)
        }


def test_sentences_are_packed_up_to_chunk_size() -> None:
    text = "".join(SENTENCES)
    chunks = ChineseTextSplitter(chunk_size=44, chunk_overlap=0).split_text(text)
    assert chunks[0] == SENTENCES[0] + SENTENCES[1]  # 20 + 13 fit; adding the third (12) would not
    assert chunks[1] == SENTENCES[2] + SENTENCES[3] + SENTENCES[4] + SENTENCES[5]  # 12+13+6+10
    assert all(len(chunk) <= 44 for chunk in chunks)


def test_closing_quotes_stay_with_their_sentence() -> None:
    text = "他说：“明天九点开会。”大家都同意了。「准时到场！」然后散会。"
    chunks = ChineseTextSplitter(chunk_size=12, chunk_overlap=0).split_text(text)
    assert chunks == ["他说：“明天九点开会。”", "大家都同意了。", "「准时到场！」然后散会。"]


def test_ascii_punctuation_needs_following_space() -> None:
    text = "Version 1.5 is out. It works!Really"
    chunks = ChineseTextSplitter(chunk_size=20, chunk_overlap=0).split_text(text)
    assert chunks == ["Version 1.5 is out.", "It works!Really"]


def test_newlines_end_sentences() -> None:
    chunks = ChineseTextSplitter(chunk_size=8, chunk_overlap=0).split_text(
        "价格表\n基础版999元\n专业版2999元"
    )
    assert chunks == ["价格表", "基础版999元", "专业版2999元"]


def test_long_sentence_is_cut_at_commas_first() -> None:
    sentence = "报销范围包括差旅费，住宿费，餐费、交通费，以及经部门负责人批准的其他费用。"
    chunks = ChineseTextSplitter(chunk_size=16, chunk_overlap=0).split_text(sentence)
    assert "".join(chunks) == sentence
    assert all(len(chunk) <= 16 for chunk in chunks)
    assert all(chunk.endswith(("，", "、", "。")) for chunk in chunks)


def test_sentence_without_commas_is_hard_cut_but_never_starts_with_punctuation() -> None:
    sentence = "甲" * 20 + "。"  # a cut at 10 characters would leave "。" alone at the start
    chunks = ChineseTextSplitter(chunk_size=10, chunk_overlap=0).split_text(sentence + "乙丙。")
    assert "".join(chunks) == sentence + "乙丙。"
    assert all(len(chunk) <= 10 for chunk in chunks)
    assert not any(chunk.startswith("。") for chunk in chunks)


def test_overlap_is_whole_trailing_sentences() -> None:
    text = "".join(SENTENCES)
    chunks = ChineseTextSplitter(chunk_size=40, chunk_overlap=15).split_text(text)
    assert len(chunks) > 2
    for previous, current in pairwise(chunks):
        shared = next(s for s in SENTENCES if current.startswith(s))
        assert previous.endswith(shared) and len(shared) <= 15
    assert not any(chunk.startswith(END_PUNCTUATION) for chunk in chunks)


def test_split_documents_metadata_and_chunk_index() -> None:
    meta = {"source": "/kb/handbook.md", "filename": "handbook.md", "heading": "年假", "page": 3}
    docs = [
        Document(page_content="".join(SENTENCES[:3]), metadata=meta),
        Document(page_content="".join(SENTENCES[3:]), metadata={**meta, "heading": "病假"}),
        Document(page_content="另一个文件的内容。", metadata={**meta, "source": "/kb/faq.txt"}),
    ]
    chunks = ChineseTextSplitter(chunk_size=25, chunk_overlap=0).split_documents(docs)
    handbook = [chunk for chunk in chunks if chunk.metadata["source"] == "/kb/handbook.md"]
    assert [chunk.metadata["chunk_index"] for chunk in handbook] == list(range(len(handbook)))
    assert {chunk.metadata["heading"] for chunk in handbook} == {"年假", "病假"}
    assert all(
        chunk.metadata["page"] == 3 and chunk.metadata["filename"] == "handbook.md" for chunk in handbook
    )
    assert chunks[-1].metadata["chunk_index"] == 0  # a new source counts from zero
    assert "chunk_index" not in docs[0].metadata  # inputs are not mutated


@pytest.mark.parametrize(("prepend", "expected"), [(True, "【年假】\n入职满一年"), (False, "入职满一年")])
def test_prepend_heading(prepend: bool, expected: str) -> None:
    doc = Document(page_content=SENTENCES[0], metadata={"source": "s", "heading": "年假"})
    (chunk,) = ChineseTextSplitter(prepend_heading=prepend).split_documents([doc])
    assert chunk.page_content.startswith(expected)


def test_prepend_heading_skips_chunks_that_start_with_it_and_missing_headings() -> None:
    docs = [
        Document(page_content="年假\n" + SENTENCES[0], metadata={"source": "s", "heading": "年假"}),
        Document(page_content=SENTENCES[1], metadata={"source": "s", "heading": None}),
    ]
    chunks = ChineseTextSplitter(prepend_heading=True).split_documents(docs)
    assert [chunk.page_content for chunk in chunks] == ["年假\n" + SENTENCES[0], SENTENCES[1]]


def test_split_elements_packs_small_elements_within_a_section() -> None:
    def element(text: str, heading: str, page: int = 1) -> Document:
        return Document(page_content=text, metadata={"source": "/kb/a.pdf", "heading": heading, "page": page})

    elements = [
        element("年假", "年假"),
        element(SENTENCES[0], "年假"),
        element(SENTENCES[1], "年假"),
        element("病假", "病假"),
        element(SENTENCES[5], "病假"),
        element("下一页的病假说明。", "病假", page=2),
    ]
    chunks = split_elements(elements, ChineseTextSplitter(chunk_size=300, chunk_overlap=50))
    assert [chunk.page_content for chunk in chunks] == [
        "年假\n" + SENTENCES[0] + "\n" + SENTENCES[1],
        "病假\n" + SENTENCES[5],
        "【病假】\n下一页的病假说明。",  # a section that goes on over a page still names itself
    ]
    assert [(c.metadata["heading"], c.metadata["page"], c.metadata["chunk_index"]) for c in chunks] == [
        ("年假", 1, 0),
        ("病假", 1, 1),
        ("病假", 2, 2),
    ]


def test_default_size_on_long_text() -> None:
    text = "".join(SENTENCES) * 40
    chunks = ChineseTextSplitter().split_text(text)
    assert len(chunks) > 5
    assert all(len(chunk) <= 300 for chunk in chunks)
    assert not any(chunk.startswith(END_PUNCTUATION) for chunk in chunks)


# --- Markdown tables ---------------------------------------------------------------------------

TABLE_HEADER = "| 型号 | 最大吸力 | 价格 |\n| --- | --- | --- |"


def _table(rows: int) -> str:
    body = "\n".join(f"| 星河R{n} | {n}000Pa | {n}999元 |" for n in range(1, rows + 1))
    return f"{TABLE_HEADER}\n{body}"


def test_a_table_is_packed_by_whole_rows_each_chunk_under_its_header() -> None:
    text = f"下表列出各型号的参数。\n{_table(30)}\n以上价格含税。"
    chunks = ChineseTextSplitter(chunk_size=120, chunk_overlap=30).split_text(text)
    assert chunks[0] == "下表列出各型号的参数。" and chunks[-1] == "以上价格含税。"
    tables = chunks[1:-1]
    assert len(tables) > 3
    rows = []
    for chunk in tables:
        assert chunk.startswith(TABLE_HEADER + "\n") and len(chunk) <= 120
        rows.extend(chunk.split("\n")[2:])
    assert rows == _table(30).split("\n")[2:]  # every row once, whole, in order


def test_a_row_longer_than_a_chunk_is_cut_with_the_header_before_each_piece() -> None:
    long_row = "| 星河R9 | " + "超长说明" * 40 + " | 9999元 |"
    chunks = ChineseTextSplitter(chunk_size=100, chunk_overlap=20).split_text(
        f"{TABLE_HEADER}\n| 星河R1 | 1000Pa | 1999元 |\n{long_row}")
    assert chunks[0] == f"{TABLE_HEADER}\n| 星河R1 | 1000Pa | 1999元 |"
    pieces = chunks[1:]
    assert len(pieces) >= 2 and all(piece.startswith(TABLE_HEADER + "\n") for piece in pieces)
    assert "".join(piece[len(TABLE_HEADER) + 1:] for piece in pieces) == long_row


def test_pipes_without_a_separator_line_are_prose() -> None:
    text = "| 这不是表格 |\n普通句子。"
    assert ChineseTextSplitter(chunk_size=100, chunk_overlap=0).split_text(text) == [text]
