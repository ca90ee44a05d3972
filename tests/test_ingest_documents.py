"""Documents as companies have them: scans and photos read by OCR with their page numbers,
tables kept as Markdown tables in every format, two-column PDFs in reading order without their
running headers and footers. All files are generated here (tests/doc_samples.py)."""

from __future__ import annotations

import logging
import re
import socket
import sys
import tomllib
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest
from pptx.util import Inches
from rapidfuzz.distance import Levenshtein

from kbqa.errors import LoaderError
from kbqa.ingest import ChineseTextSplitter, load_file, split_elements
from kbqa.ingest import ocr as ocr_module
from kbqa.ingest import pdf as pdf_module
from tests.doc_samples import (
    PRODUCT_TABLE,
    SCAN_TEXT,
    degrade,
    image_pdf,
    render_page,
    table_pdf,
    two_column_pdf,
)

PAGE_TWO = ["售后服务", "星河扫地机器人R2的保修期为三年，电池保修一年。"]


def squash(text: str) -> str:
    return "".join(text.split())


def cer(reference: list[str], text: str) -> float:
    expected = squash("".join(reference))
    return Levenshtein.distance(expected, squash(text)) / len(expected)


@pytest.fixture(scope="module")
def scan_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scanned pages at 200 dpi: a clean one, and one rotated 3° with noise and JPEG loss."""
    folder = tmp_path_factory.mktemp("scans")
    pages = [render_page(SCAN_TEXT, dpi=200, width_inches=6),
             degrade(render_page(PAGE_TWO, dpi=200, width_inches=6), angle=-3.0)]
    return image_pdf(folder / "scan.pdf", pages, dpi=200)


# --- OCR ---------------------------------------------------------------------------------------


def test_scanned_pdf_is_read_by_ocr_page_by_page(scan_pdf: Path) -> None:
    calls: list[tuple[int, int]] = []
    docs = load_file(scan_pdf, on_page=lambda done, total: calls.append((done, total)))
    assert [doc.metadata["page"] for doc in docs] == [1, 2]
    assert calls == [(1, 2), (2, 2)]
    assert cer(SCAN_TEXT, docs[0].page_content) <= 0.03, docs[0].page_content
    assert cer(PAGE_TWO, docs[1].page_content) <= 0.08, docs[1].page_content
    assert "400-123-4567" in docs[0].page_content
    assert "保修期为三年" in docs[1].page_content
    assert docs[1].metadata["filename"] == "scan.pdf"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp"])
def test_a_photo_of_a_page_is_read_by_ocr(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"notice{suffix}"
    degrade(render_page(PAGE_TWO, dpi=150, width_inches=5), angle=2.0).convert("RGB").save(path)
    (doc,) = load_file(path)
    assert doc.metadata["page"] == 1
    assert cer(PAGE_TWO, doc.page_content) <= 0.08, doc.page_content


def test_a_multi_page_tiff_keeps_its_page_numbers(tmp_path: Path) -> None:
    path = tmp_path / "fax.tiff"
    first, second = (render_page(lines, dpi=150, width_inches=5) for lines in (SCAN_TEXT[:2], PAGE_TWO))
    first.save(path, save_all=True, append_images=[second])
    docs = load_file(path)
    assert [doc.metadata["page"] for doc in docs] == [1, 2]
    assert "保修期为三年" in docs[1].page_content and "保修期" not in docs[0].page_content


def test_pages_of_a_scan_are_ocrd_side_by_side_but_an_engine_reads_one_page_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two engines read the four pages of one PDF two at a time; no engine is ever given a page
    while it reads another, and the pages come back in order with the progress counted up."""
    import dataclasses
    import threading
    import time

    busy: dict[int, int] = {}  # engine id -> pages it is reading now
    most = {"engine": 0, "all": 0}
    guard = threading.Lock()
    make = ocr_module._new_engine

    def tracked(settings: ocr_module.OcrSettings) -> object:
        engine = make(settings)

        def run(pixels: object) -> object:
            with guard:
                busy[id(engine)] = busy.get(id(engine), 0) + 1
                most["engine"] = max(most["engine"], busy[id(engine)])
                most["all"] = max(most["all"], sum(busy.values()))
            time.sleep(0.3)  # both engines are surely busy at once, even on a loaded machine
            try:
                return engine(pixels)
            finally:
                with guard:
                    busy[id(engine)] -= 1

        return run

    monkeypatch.setattr(ocr_module, "SETTINGS", dataclasses.replace(ocr_module.SETTINGS, workers=2))
    monkeypatch.setattr(ocr_module, "_new_engine", tracked)
    ocr_module._pool.cache_clear()
    texts = [[f"第{n}页", f"星河扫地机器人R{n}的保修期为{n}年。"] for n in range(1, 5)]
    path = image_pdf(tmp_path / "four.pdf", [render_page(lines, dpi=150, width_inches=4)
                                             for lines in texts], dpi=150)
    calls: list[tuple[int, int]] = []
    try:
        docs = load_file(path, on_page=lambda done, total: calls.append((done, total)))
    finally:
        ocr_module._pool.cache_clear()
    assert most == {"engine": 1, "all": 2}
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [doc.metadata["page"] for doc in docs] == [1, 2, 3, 4]
    for n, doc in enumerate(docs, start=1):
        assert f"R{n}的保修期为{n}年" in doc.page_content, doc.page_content


def test_in_order_keeps_the_page_order_and_text_pages_need_no_thread() -> None:
    import threading
    import time

    ran_on: set[str] = set()

    def job(number: int, seconds: float):
        def run() -> int:
            ran_on.add(threading.current_thread().name)
            time.sleep(seconds)  # later pages finish first
            return number
        return run

    items = [ocr_module.Ready(0), job(1, 0.3), ocr_module.Ready(2), job(3, 0.2), job(4, 0.0),
             ocr_module.Ready(5)]
    assert list(ocr_module.in_order(items, workers=2)) == [0, 1, 2, 3, 4, 5]
    assert ran_on and all(name.startswith("kbqa-ocr") for name in ran_on)
    with pytest.MonkeyPatch.context() as patch:  # a text PDF's pages: no executor at all
        patch.setattr(ocr_module, "ThreadPoolExecutor", None)
        assert list(ocr_module.in_order([ocr_module.Ready(n) for n in range(3)], workers=2)) == [
            0, 1, 2]


def test_ocr_models_come_from_the_package_without_any_download(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("OCR tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    ocr_module._pool.cache_clear()  # load the models again, with the network closed
    path = tmp_path / "page.png"
    render_page(SCAN_TEXT[:2], dpi=150, width_inches=5).save(path)
    assert "带薪年假" in load_file(path)[0].page_content


def test_without_the_ocr_extra_a_scan_is_refused_with_the_install_command(
        scan_pdf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_module, "ocr_available", lambda: False)
    with pytest.raises(LoaderError, match=r"scan\.pdf: a scanned PDF \(no text layer\); "
                                          r"OCR is not installed: pip install 'kbqa\[ocr\]'"):
        load_file(scan_pdf)
    path = tmp_path / "photo.jpg"
    render_page(["星河"], dpi=72, width_inches=2).save(path)
    with pytest.raises(LoaderError, match=r"photo\.jpg: an image, read only by OCR; .*kbqa\[ocr\]"):
        load_file(path)


def test_rapidocr_without_its_inference_engine_counts_as_no_ocr(
        scan_pdf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rapidocr 3 installs without onnxruntime; a fresh install once failed on the first page."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else find_spec(name, *args))
    assert not ocr_module.ocr_available()
    with pytest.raises(LoaderError, match=r"scan\.pdf: a scanned PDF \(no text layer\); "
                                          r"OCR is not installed: pip install 'kbqa\[ocr\]'"):
        load_file(scan_pdf)
    extras = tomllib.loads((KNOWLEDGE_PDF.parents[1] / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]
    for package in ocr_module._OCR_PACKAGES:  # what OCR needs is what `kbqa[ocr]` and CI install
        for extra in ("ocr", "dev"):
            assert any(dep.startswith(f"{package}==") for dep in extras[extra]), (package, extra)


def test_a_text_pdf_is_not_sent_to_ocr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> str:
        raise AssertionError("OCR ran on a page with a text layer")

    monkeypatch.setattr(pdf_module, "ocr_image", refuse)
    docs = load_file(table_pdf(tmp_path / "params.pdf", PRODUCT_TABLE))
    assert "产品参数表" in docs[0].page_content


def test_a_corrupt_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(LoaderError, match=r"broken\.png: corrupt or not a valid image"):
        load_file(path)


# --- tables ------------------------------------------------------------------------------------

HEADER = "| 型号 | 最大吸力 | 续航 | 价格 |"
R2_ROW = "| 星河扫地机器人R2 | 4000Pa | 150分钟 | 2999元 |"


def _docx_table(path: Path) -> Path:
    document = docx.Document()
    document.add_paragraph("各型号参数如下。")
    table = document.add_table(rows=len(PRODUCT_TABLE), cols=len(PRODUCT_TABLE[0]))
    for r, row in enumerate(PRODUCT_TABLE):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.save(str(path))
    return path


def _xlsx_table(path: Path) -> Path:
    book = openpyxl.Workbook()
    for row in PRODUCT_TABLE:
        book.active.append(row)
    book.save(str(path))
    return path


def _pptx_table(path: Path) -> Path:
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "产品参数"
    shape = slide.shapes.add_table(len(PRODUCT_TABLE), len(PRODUCT_TABLE[0]),
                                   Inches(0.5), Inches(1.5), Inches(9), Inches(3))
    for r, row in enumerate(PRODUCT_TABLE):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    deck.save(str(path))
    return path


def _html_table(path: Path) -> Path:
    head = "".join(f"<th>{cell}</th>" for cell in PRODUCT_TABLE[0])
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in PRODUCT_TABLE[1:])
    path.write_text(f"<html><body><h1>产品参数</h1><table><thead><tr>{head}</tr></thead>"
                    f"<tbody>{body}</tbody></table></body></html>", encoding="utf-8")
    return path


def _csv_table(path: Path) -> Path:
    path.write_text("\n".join(",".join(row) for row in PRODUCT_TABLE) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("make", [_docx_table, _xlsx_table, _pptx_table, _html_table, _csv_table,
                                  lambda p: table_pdf(p, PRODUCT_TABLE)],
                         ids=["docx", "xlsx", "pptx", "html", "csv", "pdf"])
def test_tables_become_markdown_tables_with_their_header(tmp_path: Path, make) -> None:
    suffix = {"_docx_table": ".docx", "_xlsx_table": ".xlsx", "_pptx_table": ".pptx",
              "_html_table": ".html", "_csv_table": ".csv"}.get(make.__name__, ".pdf")
    docs = load_file(make(tmp_path / f"params{suffix}"))
    text = "\n".join(doc.page_content for doc in docs)
    assert f"{HEADER}\n| --- | --- | --- | --- |\n" in text, text
    assert R2_ROW in text
    # every cell of the table is in the text, in its row
    for row in PRODUCT_TABLE:
        assert "| " + " | ".join(row) + " |" in text


def test_a_long_table_is_split_by_rows_with_the_header_in_every_chunk(tmp_path: Path) -> None:
    rows = [PRODUCT_TABLE[0]] + [[f"星河扫地机器人X{n}", f"{n}000Pa", f"{n}0分钟", f"{n}99元"]
                                 for n in range(1, 61)]
    docs = load_file(_xlsx_table_rows(tmp_path / "long.xlsx", rows))
    chunks = split_elements(docs, ChineseTextSplitter(chunk_size=200, chunk_overlap=40))
    assert len(chunks) > 5
    body_rows = []
    for chunk in chunks:
        lines = chunk.page_content.split("\n")
        assert lines[:2] == [HEADER, "| --- | --- | --- | --- |"], chunk.page_content
        assert len(chunk.page_content) <= 200
        assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
        body_rows.extend(lines[2:])
    assert body_rows == ["| " + " | ".join(row) + " |" for row in rows[1:]]  # each row once, whole


def _xlsx_table_rows(path: Path, rows: list[list[str]]) -> Path:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(str(path))
    return path


def test_a_pdf_table_over_two_pages_keeps_its_header_on_the_second(tmp_path: Path) -> None:
    rows = [PRODUCT_TABLE[0]] + [[f"星河扫地机器人X{n}", f"{n}000Pa", f"{n}0分钟", f"{n}99元"]
                                 for n in range(1, 71)]
    docs = load_file(table_pdf(tmp_path / "long.pdf", rows))
    assert [doc.metadata["page"] for doc in docs] == [1, 2]  # reportlab did not repeat the header
    for doc in docs:
        assert doc.page_content.count(HEADER) == 1, doc.page_content
    text = "\n".join(doc.page_content for doc in docs)
    assert all("| " + " | ".join(row) + " |" in text for row in rows[1:])


# --- PDF layout --------------------------------------------------------------------------------

LEFT = ["左栏一：公司成立于2015年。", "左栏二：总部位于杭州。", "左栏三：员工三百二十人。"]
RIGHT = ["右栏一：主营智能家居。", "右栏二：年营收五亿元。", "右栏三：客户遍布全国。"]


def test_two_columns_read_in_order_without_running_header_and_footer(tmp_path: Path) -> None:
    path = two_column_pdf(tmp_path / "report.pdf", LEFT, RIGHT, pages=3, interleave=True)
    docs = load_file(path)
    assert [doc.metadata["page"] for doc in docs] == [1, 2, 3]
    for number, doc in enumerate(docs, start=1):
        expected = [f"{line}（{number}）" for line in LEFT + RIGHT]
        assert doc.page_content.split("\n") == expected, doc.page_content
        assert "内部资料" not in doc.page_content and "页" not in doc.page_content


def test_one_page_keeps_its_header_but_labels_beside_values_stay_in_rows(tmp_path: Path) -> None:
    from reportlab.pdfgen import canvas

    from tests.doc_samples import _cid_font

    path = tmp_path / "form.pdf"
    pdf = canvas.Canvas(str(path))
    pdf.setFont(_cid_font(), 11)
    for row, (label, value) in enumerate([("姓名：", "张三"), ("部门：", "研发部")]):
        pdf.drawString(72, 700 - 20 * row, label)
        pdf.drawString(400, 700 - 20 * row, value)
    pdf.showPage()
    pdf.save()
    (doc,) = load_file(path)
    assert doc.page_content.split("\n") == ["姓名：", "张三", "部门：", "研发部"]


# --- end to end: ingest, then retrieve the scan's page and the table's row ----------------------


def test_cli_ingests_a_scan_with_a_page_bar_and_retrieval_cites_page_and_row(
        scan_pdf: Path, tmp_path: Path) -> None:
    """`kbqa ingest scan.pdf params.docx`: the scan's answer comes back from page 2, and a
    question on a table cell retrieves the chunk holding its row under the table's header."""
    import os
    import subprocess
    import sys

    from kbqa.config import load_settings
    from kbqa.service import KbqaService

    table = _docx_table(tmp_path / "params.docx")
    result = subprocess.run([sys.executable, "-m", "kbqa.cli", "ingest", str(scan_pdf), str(table)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                            text=True, timeout=600, check=False, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 added" in result.stdout
    assert "scan.pdf: 100%" in result.stderr and "2/2" in result.stderr  # the page bar

    service = KbqaService(load_settings())
    scan_hits = service.retrieve("星河扫地机器人R2的保修期是多久？")
    top = scan_hits[0]
    assert (top.metadata["filename"], top.metadata["page"]) == ("scan.pdf", 2)
    assert "保修期为三年" in top.page_content

    row_hits = service.retrieve("星河扫地机器人R2的最大吸力是多少？")
    cited = next(doc for doc in row_hits if doc.metadata["filename"] == "params.docx")
    assert HEADER in cited.page_content and R2_ROW in cited.page_content


# --- base install: PDFs without PyMuPDF (AGPL-3.0, the `pdf` extra) ------------------------------

KNOWLEDGE_PDF = Path(__file__).resolve().parents[1] / "knowledge" / "price_and_service.pdf"


@pytest.fixture
def no_pymupdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import pymupdf` fails, as on `pip install kbqa` without the pdf extra."""
    monkeypatch.setitem(sys.modules, "pymupdf", None)
    pdf_module._note_plain_backend.cache_clear()


def test_pymupdf_is_an_extra_not_a_base_dependency() -> None:
    """kbqa is Apache-2.0: its base install must not pull an AGPL package; CI still tests it."""
    project = tomllib.loads((KNOWLEDGE_PDF.parents[1] / "pyproject.toml").read_text())["project"]
    base = [re.split(r"[\[=<>!~ ;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]]
    assert "pymupdf" not in base and "pypdfium2" in base
    assert "pymupdf==1.28.2" in project["optional-dependencies"]["pdf"]
    assert "pymupdf==1.28.2" in project["optional-dependencies"]["dev"]


def test_without_pymupdf_pdf_pages_keep_their_numbers_and_text(
        no_pymupdf: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kbqa.ingest.pdf")
    assert not pdf_module.layout_available()
    path = two_column_pdf(tmp_path / "report.pdf", LEFT, RIGHT, pages=3, interleave=True)
    docs = load_file(path)
    assert [doc.metadata["page"] for doc in docs] == [1, 2, 3]
    for number, doc in enumerate(docs, start=1):
        assert all(f"{line}（{number}）" in doc.page_content for line in LEFT + RIGHT), doc.page_content
        assert f"第{number}页" in doc.page_content  # no layout step: the footer stays
    table = load_file(table_pdf(tmp_path / "params.pdf", PRODUCT_TABLE))[0].page_content
    assert "星河扫地机器人R2 4000Pa 150分钟 2999元" in table.split("\n")  # a row stays on its line
    hints = [r.getMessage() for r in caplog.records if "kbqa[pdf]" in r.getMessage()]
    assert hints == [pdf_module.LAYOUT_HINT]  # once for the process, not once per file


def test_without_pymupdf_the_sample_knowledge_pdf_is_read(no_pymupdf: None) -> None:
    """The README's first run ingests knowledge/ on a base install: its PDF must load there."""
    docs = load_file(KNOWLEDGE_PDF)
    assert [doc.metadata["page"] for doc in docs] == [1, 2]
    assert "星河扫地机器人R2：每台2499元。" in docs[0].page_content.split("\n")
    assert "售后服务热线：400-820-1234，服务时间为每天9:00至21:00。" in docs[1].page_content


def test_without_pymupdf_a_scan_is_read_by_ocr_page_by_page(no_pymupdf: None, scan_pdf: Path) -> None:
    calls: list[tuple[int, int]] = []
    docs = load_file(scan_pdf, on_page=lambda done, total: calls.append((done, total)))
    assert [doc.metadata["page"] for doc in docs] == [1, 2]
    assert calls == [(1, 2), (2, 2)]
    assert cer(SCAN_TEXT, docs[0].page_content) <= 0.03, docs[0].page_content
    assert "保修期为三年" in docs[1].page_content


def test_without_pymupdf_or_ocr_a_scan_is_refused_with_the_install_command(
        no_pymupdf: None, scan_pdf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_module, "ocr_available", lambda: False)
    with pytest.raises(LoaderError, match=r"scan\.pdf: a scanned PDF \(no text layer\); "
                                          r"OCR is not installed: pip install 'kbqa\[ocr\]'"):
        load_file(scan_pdf)


def test_without_pymupdf_bad_pdfs_are_refused_clearly(no_pymupdf: None, tmp_path: Path) -> None:
    from reportlab.pdfgen import canvas

    locked = tmp_path / "locked.pdf"
    pdf = canvas.Canvas(str(locked), encrypt="secret")
    pdf.drawString(72, 700, "confidential")
    pdf.showPage()
    pdf.save()
    with pytest.raises(LoaderError, match=r"^locked\.pdf: encrypted PDF; remove its password first$"):
        load_file(locked)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is no pdf\n")
    with pytest.raises(LoaderError, match=r"^broken\.pdf: corrupt or not a valid PDF file"):
        load_file(broken)
    named = tmp_path / "report.csv"
    named.write_bytes(KNOWLEDGE_PDF.read_bytes())
    with pytest.raises(LoaderError, match=r"report\.csv: the content is application/pdf"):
        load_file(named)


def test_cli_ingest_without_pymupdf_reads_the_pdf_and_names_the_extra(tmp_path: Path) -> None:
    """`kbqa ingest` of the sample PDF on a base install: added, and one note on the pdf extra."""
    import os
    import subprocess

    hide = ("import sys; sys.modules['pymupdf'] = None; from kbqa.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "KBQA_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", hide, "ingest", str(KNOWLEDGE_PDF)], env=env,
                            capture_output=True, text=True, timeout=600, check=False,
                            cwd=KNOWLEDGE_PDF.parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "added" in result.stdout and "1 added" in result.stdout
    assert result.stderr.count("pip install 'kbqa[pdf]'") == 1, result.stderr


def test_cli_ingest_with_pymupdf_has_no_note(capsys: pytest.CaptureFixture[str]) -> None:
    from kbqa.cli import _note_pdf_layout
    from kbqa.kb.results import IngestResult

    _note_pdf_layout([IngestResult(KNOWLEDGE_PDF, "added", chunks=3)])
    assert "kbqa[pdf]" not in capsys.readouterr().err
