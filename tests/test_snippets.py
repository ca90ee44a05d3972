"""Sources at a glance (kbqa/qa/snippets.py): prose clipped, a table kept as a table with its
header and the rows asked about, the CLI's aligned columns, the answer marked and document text
escaped. Tables come from real files through the real loader and splitter."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import docx
import pytest
from langchain_core.documents import Document
from markdown_it import MarkdownIt

from kbqa.ingest import load_file
from kbqa.ingest.splitter import ChineseTextSplitter
from kbqa.qa.answers import Source
from kbqa.qa.snippets import (
    SNIPPET_CHARS,
    TABLE_CHARS,
    TABLE_ROWS,
    aligned,
    highlighted_markdown,
    snippet,
)

QUESTION = "星河扫地机器人R2的最大吸力是多少？"


def make_docx(path: Path) -> Path:
    """The issue's product sheet: a parameter table, one column per model."""
    document = docx.Document()
    document.add_heading("技术参数", level=1)
    rows = [("参数", "星河扫地机器人R2", "星河扫地机器人R3"), ("最大吸力", "4000Pa", "5000Pa"),
            ("续航", "150分钟", "180分钟"), ("尘盒容量", "450毫升", "500毫升")]
    table = document.add_table(rows=len(rows), cols=3)
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    document.save(str(path))
    return path


def make_csv(path: Path, models: int = 12) -> Path:
    lines = ["型号,最大吸力,续航"] + [f"星河X{n},{n}000Pa,{n * 10}分钟" for n in range(1, models + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chunks(path: Path, chunk_size: int = 300) -> list[Document]:
    """The chunks holding a table, as ingest stores them."""
    parts = ChineseTextSplitter(chunk_size=chunk_size, chunk_overlap=30).split_documents(load_file(path))
    return [part for part in parts if "| --- |" in part.page_content]


def html(markdown: str) -> str:
    """What a CommonMark + GFM-table renderer with raw HTML on makes of the web app's Markdown."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def test_prose_stays_one_short_line() -> None:
    text = "入职满一年的员工\n每年享有十天带薪年假。" * 20
    short = snippet(text, "年假有几天？")
    assert "\n" not in short
    assert short == " ".join(text.split())[:SNIPPET_CHARS] + "…"
    assert snippet("短句。\n第二句。") == "短句。 第二句。"


def test_docx_table_keeps_the_header_and_the_row_asked_about(tmp_path: Path) -> None:
    [chunk] = chunks(make_docx(tmp_path / "产品参数.docx"))
    source = Source.from_document(chunk, QUESTION)
    assert source.snippet.split("\n") == [
        "【技术参数】",
        "| 参数 | 星河扫地机器人R2 | 星河扫地机器人R3 |",
        "| --- | --- | --- |",
        "| 最大吸力 | 4000Pa | 5000Pa |",
        "| … | … | … |",  # the other rows are left out, and that is shown
    ]
    # without a question, the table's first rows
    assert "| 续航 | 150分钟 | 180分钟 |" in Source.from_document(chunk).snippet.split("\n")


def test_csv_table_is_bounded(tmp_path: Path) -> None:
    parts = chunks(make_csv(tmp_path / "型号.csv", models=60), chunk_size=2000)
    assert len(parts) == 1 and parts[0].page_content.count("\n") > 60
    plain = snippet(parts[0].page_content)
    lines = plain.split("\n")
    assert lines[0] == "| 型号 | 最大吸力 | 续航 |" and lines[1] == "| --- | --- | --- |"
    assert lines[2:-1] == [f"| 星河X{n} | {n}000Pa | {n * 10}分钟 |" for n in range(1, TABLE_ROWS + 1)]
    assert lines[-1] == "| … | … | … |" and len(plain) <= TABLE_CHARS + len(lines[-1])
    asked = snippet(parts[0].page_content, "星河X37的续航是多久？").split("\n")
    assert asked[2:] == ["| 星河X37 | 37000Pa | 370分钟 |", "| … | … | … |"]


def test_cli_lines_up_a_tables_columns(tmp_path: Path) -> None:
    [chunk] = chunks(make_docx(tmp_path / "产品参数.docx"))
    lines = aligned(snippet(chunk.page_content))
    assert lines[0] == "【技术参数】"
    header, rule, *rows = lines[1:]
    assert header.split(" | ")[0].strip() == "参数" and "|" not in rule and set(rule) == {"-", "+"}
    # every column starts at the same display column on every line (CJK characters are 2 wide)
    for line in [header, *rows]:
        bars = [display_width(line[:i]) for i, char in enumerate(line) if char == "|"]
        assert bars == [display_width(rule[:i]) for i, char in enumerate(rule) if char == "+"]
    assert rows[0].split() == ["最大吸力", "|", "4000Pa", "|", "5000Pa"]
    assert aligned("一行散文。") == ["一行散文。"]


def test_web_app_markdown_renders_the_table_and_marks_the_answer(tmp_path: Path) -> None:
    [chunk] = chunks(make_docx(tmp_path / "产品参数.docx"))
    shown = html(highlighted_markdown(snippet(chunk.page_content, QUESTION),
                                      "R2的最大吸力为4000Pa。"))
    assert "<th>参数</th>" in shown and "<th>星河扫地机器人R2</th>" in shown
    assert "<td>最大吸力</td>" in shown and "<td><mark>4000Pa</mark></td>" in shown
    assert "<p>【技术参数】</p>" in shown


@pytest.mark.parametrize(("answer", "marked"), [
    ("入职满一年的员工每年享有十天带薪年假。", "<mark>入职满一年的员工每年享有十天带薪年假。</mark>"),
    ("他们享有十天带薪年假", "<mark>享有十天带薪年假</mark>"),
])
def test_the_longest_common_run_is_marked(answer: str, marked: str) -> None:
    passage = "入职满一年的员工每年享有十天带薪年假。"
    assert html(highlighted_markdown(passage, answer)) == f"<p>{passage}</p>\n".replace(
        marked.replace("<mark>", "").replace("</mark>", ""), marked)


@pytest.mark.parametrize("answer", ["", "十天", "Ten days.", "年假。"])
def test_a_short_or_absent_common_run_is_not_marked(answer: str) -> None:
    assert "<mark>" not in highlighted_markdown("入职满一年的员工每年享有十天带薪年假。", answer)


def test_document_text_cannot_inject_markup() -> None:
    hostile = ('<script>alert(1)</script> <img src=x onerror=alert(2)> **重要粗体** '
               '![图](http://example.com/a.png) [链接](javascript:alert(3)) $x^2$ '
               ':red[红色] `代码` # 标题 <mark>假的</mark> &lt; \\')
    shown = html(highlighted_markdown(hostile, "重要粗体"))
    for tag in ("<script", "<img", "<strong", "<a ", "<code", "<h1", "<em"):
        assert tag not in shown, tag
    assert shown.count("<mark>") == 1  # the document's own <mark> is text, not a tag
    # and reads as the document wrote it
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "**<mark>重要粗体</mark>**" in shown
    assert "![图](http://example.com/a.png)" in shown and ":red[红色]" in shown
    assert "&amp;lt;" in shown  # the document's "&lt;" is shown as typed


def test_a_pipe_inside_a_cell_stays_in_its_cell(tmp_path: Path) -> None:
    path = tmp_path / "符号.csv"
    path.write_text('名称,说明\n竖线,"a|b <b>粗</b>"\n', encoding="utf-8")
    [chunk] = chunks(path)
    shown = html(highlighted_markdown(snippet(chunk.page_content, "竖线")))
    assert "<td>a|b &lt;b&gt;粗&lt;/b&gt;</td>" in shown and shown.count("<td>") == 2


def test_kbqa_ask_prints_a_cited_table_with_aligned_rows(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from kbqa.cli import _print_sources
    from kbqa.qa.answers import Answer

    [chunk] = chunks(make_docx(tmp_path / "产品参数.docx"))
    source = Source.from_document(chunk, QUESTION)
    _print_sources(Answer(question=QUESTION, text="4000Pa", sources=[source], refused=False))
    printed = capsys.readouterr().out.split("\n")
    start = printed.index("      【技术参数】")
    assert printed[start + 1:start + 5] == [f"      {line}" for line in aligned(source.snippet)[1:]]
    assert printed[start + 3].split() == ["最大吸力", "|", "4000Pa", "|", "5000Pa"]


def test_a_mark_never_cuts_a_number_or_word() -> None:
    # "1000Pa" is not "3000Pa": no "000Pa" marked inside the passage's value
    assert "<mark>" not in highlighted_markdown("| 型号 | 最大吸力 |\n| --- | --- |\n| 星河X3 | 3000Pa |",
                                                "最大吸力是1000Pa。")
    assert "<mark>3000Pa</mark>" in highlighted_markdown(
        "| 型号 | 最大吸力 |\n| --- | --- |\n| 星河X3 | 3000Pa |", "是3000Pa。")
