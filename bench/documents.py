"""Documents as companies have them: PDF parsing speed and reading order (pypdf against kbqa's
loader with PyMuPDF and with pypdfium2), table cell recall per format, and OCR of scanned PDFs
through kbqa's loader.

  * PDF speed: text PDFs of CMRC 2018 sentences (bench/zh_corpus.py) set as wrapped paragraphs
    by reportlab, parsed back to back by pypdf's ``extract_text`` per page (kbqa's loader before
    this change), by plain PyMuPDF ``get_text`` per page, and by ``kbqa.ingest.pdf.load_pdf``
    (PyMuPDF lines, table finding, reading order, header/footer removal), and by the same
    loader as on a base install without the pdf extra (pypdfium2 text per page). Best of --repeats.
  * Reading order: two-column pages written row by row across the columns (tests/doc_samples.py)
    with a running header and footer: share of pages whose lines come out left column first,
    then right, and whether the header/footer lines are still in the text.
  * Table cells: a 40-row, 5-column table in DOCX, XLSX, PPTX, HTML, CSV and PDF, loaded and
    split with the default chunk size: share of body cells that sit in a chunk holding both the
    cell's whole row and the table's header row.
  * OCR: scanned PDFs (clean 200-dpi renders and noisy ones: ±3°, noise, JPEG) through
    ``load_file``: CER, pages/s, and CPU seconds a page (all threads: a figure that holds when
    other processes share the cores, unlike wall time).

    python bench/documents.py                  # all parts
    python bench/documents.py --parts pdf order

Writes JSON to bench/results/documents.json (or --json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from unittest.mock import patch
from xml.sax.saxutils import escape

from rapidfuzz.distance import Levenshtein
from zh_corpus import sentences

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_facts import with_machine

from kbqa.ingest import ChineseTextSplitter, load_file, split_elements
from kbqa.ingest import pdf as pdf_module
from kbqa.ingest.pdf import load_pdf
from tests.doc_samples import (
    _cid_font,
    degrade,
    image_pdf,
    render_page,
    table_pdf,
    two_column_pdf,
)


def text_pdfs(folder: Path, files: int, pages: int, seed: int) -> list[Path]:
    """`files` PDFs of about `pages` A4 pages of wrapped Chinese paragraphs each."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    rng = random.Random(seed)
    pool = sentences()
    style = ParagraphStyle("zh", fontName=_cid_font(), fontSize=11, leading=17, wordWrap="CJK")
    paths = []
    for number in range(files):
        story = []
        for _ in range(pages):
            story += [Paragraph(escape("".join(rng.sample(pool, 8))), style) for _ in range(4)]
            story.append(PageBreak())
        path = folder / f"text-{number}.pdf"
        SimpleDocTemplate(str(path), pagesize=A4).build(story)
        paths.append(path)
    return paths


def _pypdf_pages(path: Path) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(path).pages]


def _pymupdf_pages(path: Path) -> list[str]:
    import pymupdf

    with pymupdf.open(path) as document:
        return [page.get_text() for page in document]


def _kbqa_pages(path: Path) -> list[str]:
    return [text for text, _ in load_pdf(path)]


def _kbqa_base_pages(path: Path) -> list[str]:
    """kbqa's loader as on a base install (no pdf extra): the pypdfium2 backend."""
    with patch.object(pdf_module, "layout_available", return_value=False):
        return [text for text, _ in load_pdf(path)]


READERS = {"pypdf": _pypdf_pages, "pymupdf get_text": _pymupdf_pages,
           "kbqa load_pdf": _kbqa_pages, "kbqa load_pdf base": _kbqa_base_pages}


def pdf_speed(work: Path, files: int, pages: int, repeats: int) -> dict:
    paths = text_pdfs(work, files, pages, seed=0)
    counts = {}
    rows = {}
    for _ in range(repeats):
        for name, read in READERS.items():  # back to back, interleaved
            started = time.perf_counter()
            total = sum(len(read(path)) for path in paths)
            seconds = time.perf_counter() - started
            counts[name] = total
            rows[name] = min(rows.get(name, seconds), seconds)
    result = {name: {"pages": counts[name], "best_s": round(seconds, 3),
                     "pages_per_s": round(counts[name] / seconds, 1)} for name, seconds in rows.items()}
    for name, row in result.items():
        print(f"PDF speed  {name:19s} {row['pages']} pages in {row['best_s']:.2f} s: "
              f"{row['pages_per_s']:.1f} pages/s")
    return result


def reading_order(work: Path, pages: int) -> dict:
    rng = random.Random(1)
    pool = [s[:14] for s in sentences() if len(s) >= 14]
    left, right = rng.sample(pool, 6), rng.sample(pool, 6)
    path = two_column_pdf(work / "two-column.pdf", left, right, pages=pages, interleave=True)
    result = {}
    for name, read in (("pypdf", _pypdf_pages), ("kbqa load_pdf", _kbqa_pages),
                       ("kbqa load_pdf base", _kbqa_base_pages)):
        texts = read(path)
        right_order = furniture = 0
        for number, text in enumerate(texts, start=1):
            lines = [line.strip() for line in text.split("\n") if line.strip()]
            expected = [f"{line}（{number}）" for line in left + right]
            body = [line for line in lines if line in expected]
            right_order += body == expected
            furniture += any("内部资料" in line or line == f"第{number}页" for line in lines)
        result[name] = {"pages": len(texts), "reading_order_ok": right_order,
                        "pages_with_header_or_footer": furniture}
        print(f"order      {name:19s} {right_order}/{len(texts)} pages in reading order, "
              f"header/footer left on {furniture}")
    return result


def _table_rows(rows: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    header = ["型号", "最大吸力", "续航", "噪音", "价格"]
    body = [[f"星河扫地机器人{chr(65 + n % 26)}{n}", f"{rng.randrange(20, 80) * 100}Pa",
             f"{rng.randrange(60, 240)}分钟", f"{rng.randrange(50, 70)}分贝",
             f"{rng.randrange(10, 60) * 100 - 1}元"] for n in range(rows)]
    return [header, *body]


def table_files(work: Path, rows: list[list[str]]) -> dict[str, Path]:
    import docx
    import openpyxl
    import pptx
    from pptx.util import Inches, Pt

    files = {}
    document = docx.Document()
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.save(str(work / "t.docx"))
    files["docx"] = work / "t.docx"
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(str(work / "t.xlsx"))
    files["xlsx"] = work / "t.xlsx"
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[6])
    shape = slide.shapes.add_table(len(rows), len(rows[0]), Inches(0.2), Inches(0.2), Inches(9.5),
                                   Inches(7))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            cell = shape.table.cell(r, c)
            cell.text = value
            cell.text_frame.paragraphs[0].runs[0].font.size = Pt(6)
    deck.save(str(work / "t.pptx"))
    files["pptx"] = work / "t.pptx"
    head = "".join(f"<th>{cell}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows[1:])
    (work / "t.html").write_text(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
                                 encoding="utf-8")
    files["html"] = work / "t.html"
    (work / "t.csv").write_text("\n".join(",".join(row) for row in rows), encoding="utf-8")
    files["csv"] = work / "t.csv"
    files["pdf"] = table_pdf(work / "t.pdf", rows)
    return files


def table_recall(work: Path, rows: int) -> dict:
    from kbqa.config import load_settings

    settings = load_settings(environ={})
    splitter = ChineseTextSplitter(chunk_size=settings.kb.chunk_size,
                                   chunk_overlap=settings.kb.chunk_overlap)
    table = _table_rows(rows, seed=2)
    header = "| " + " | ".join(table[0]) + " |"
    result = {}
    for kind, path in table_files(work, table).items():
        chunks = [chunk.page_content for chunk in split_elements(load_file(path), splitter)]
        found = 0
        for row in table[1:]:
            line = "| " + " | ".join(row) + " |"
            if any(header in chunk and line in chunk for chunk in chunks):
                found += len(row)
        cells = sum(len(row) for row in table[1:])
        result[kind] = {"cells": cells, "with_row_and_header": found, "recall": found / cells,
                        "chunks": len(chunks)}
        print(f"tables     {kind:5s} {found}/{cells} cells in a chunk with their row and header "
              f"({len(chunks)} chunks)")
    return result


def ocr_loader(work: Path, pages: int, dpi: int, max_side: int | None) -> dict:
    from kbqa.ingest import ocr

    if max_side:
        ocr.SETTINGS = dataclasses.replace(ocr.SETTINGS, max_side=max_side)
        ocr._pool.cache_clear()
    rng = random.Random(3)
    pool = sentences()
    texts = [rng.sample(pool, 12) for _ in range(pages)]
    references = ["".join("".join(lines).split()) for lines in texts]
    result = {}
    for kind in ("clean", "noisy"):
        images = [render_page(lines, dpi=dpi) for lines in texts]
        if kind == "noisy":
            images = [degrade(image, seed=n, angle=rng.choice((-3.0, 3.0)))
                      for n, image in enumerate(images)]
        path = image_pdf(work / f"scan-{kind}.pdf", images, dpi=dpi)
        load_file(path)  # the OCR models load once per process: not timed
        started, cpu = time.perf_counter(), time.process_time()
        docs = load_file(path)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        errors = sum(Levenshtein.distance(ref, "".join(doc.page_content.split()))
                     for ref, doc in zip(references, docs, strict=True))
        cer = errors / sum(map(len, references))
        result[kind] = {"pages": pages, "dpi": dpi, "settings": dataclasses.asdict(ocr.SETTINGS),
                        "cer": cer,
                        "pages_per_s": pages / seconds, "cpu_s_per_page": cpu / pages}
        print(f"OCR        {kind:5s} {dpi} dpi scans, longest side {ocr.SETTINGS.max_side}: CER {cer:.2%}, "
              f"{pages / seconds:.2f} pages/s, {cpu / pages:.2f} CPU s a page (all threads)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["pdf", "order", "tables", "ocr"])
    parser.add_argument("--pdf-files", type=int, default=10)
    parser.add_argument("--pdf-pages", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ocr-pages", type=int, default=3)
    parser.add_argument("--ocr-dpi", type=int, default=200)
    parser.add_argument("--ocr-max-side", type=int, default=None,
                        help="RapidOCR's Global.max_side_len (default: kbqa's)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "documents.json")
    args = parser.parse_args()
    payload: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "pdf" in args.parts:
            payload["pdf_speed"] = pdf_speed(work, args.pdf_files, args.pdf_pages, args.repeats)
        if "order" in args.parts:
            payload["reading_order"] = reading_order(work, pages=5)
        if "tables" in args.parts:
            payload["table_recall"] = table_recall(work, rows=40)
        if "ocr" in args.parts:
            payload["ocr"] = ocr_loader(work, args.ocr_pages, args.ocr_dpi, args.ocr_max_side)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(with_machine(payload), ensure_ascii=False, indent=2),
                         encoding="utf-8")


if __name__ == "__main__":
    main()
