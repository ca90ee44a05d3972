"""PDF pages and images → text, page by page, in reading order.

Two backends behind one loader. With the optional extra ``kbqa[pdf]`` (PyMuPDF, AGPL-3.0), text
lines come with their boxes and ruled tables are found: pages are read column by column, running
headers and footers (the same text in the top or bottom band of most pages) are dropped, and
tables come out as Markdown; picked over pypdf on speed and reading order (docs/benchmarks.md
§Documents). The base install keeps to permissive licences: pypdfium2 (Apache-2.0/BSD) gives
each page's text in PDFium's order, one block a page. On either, a page that is only a scan goes
through OCR when ``kbqa[ocr]`` is installed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbqa.errors import LoaderError
from kbqa.ingest.ocr import (
    INSTALL_HINT,
    PageProgress,
    Ready,
    in_order,
    ocr_available,
    ocr_image,
)
from kbqa.ingest.tables import markdown_table

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

LAYOUT_HINT = ("PDFs are read as plain text per page; pip install 'kbqa[pdf]' gives layout-aware "
               "PDF parsing with tables (PyMuPDF, AGPL-3.0)")
# A page with fewer characters than this in its text layer, and an image on it, is a scan.
_SCAN_MAX_CHARS = 30
_OCR_DPI = 200
# Running headers and footers live in these top and bottom shares of the page height.
_FURNITURE_BAND = 0.1
# A column is a real text column (not a label beside its value) when its blocks are this wide.
_COLUMN_MIN_WIDTH = 0.2
_PAGE_NUMBER = re.compile(r"^[\s\-—–·第页Pp\.age/]*\d+[\s\-—–·第页/\d共]*$")
# PDFium is not thread-safe: one document at a time in this process (server uploads run in threads).
_pdfium_lock = threading.Lock()


@dataclass
class _Block:
    """A line of text or a table on a page, with its box in points."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    rows: list[list[str]] | None = None  # a table's cells, header row first


@dataclass
class _Page:
    """What the loader needs of one page, whichever backend read it."""

    blocks: list[_Block]
    width: float
    height: float
    has_images: Callable[[], bool]  # asked only of pages with almost no text
    render: Callable[[], Image]  # greyscale at the OCR resolution


def layout_available() -> bool:
    """Whether the layout-aware backend (the ``pdf`` extra, PyMuPDF) can be imported."""
    try:
        import pymupdf  # noqa: F401
    except ImportError:
        return False
    return True


def layout_hint() -> str | None:
    """What to install for layout-aware PDF parsing, or None when it is installed."""
    return None if layout_available() else LAYOUT_HINT


@cache
def _note_plain_backend() -> None:
    """Say once per process that PDFs are read without layout, and how to get it."""
    log.info(LAYOUT_HINT)


def _pymupdf() -> Any:
    """PyMuPDF, quiet: it prints an advert for its layout package to stdout and MuPDF's parse
    warnings to stderr, where kbqa's CLI prints answers; a bad file raises LoaderError instead."""
    import pymupdf

    pymupdf.no_recommend_layout()
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    return pymupdf


def page_count(path: Path) -> int:
    """Pages of a PDF; raises if it does not open as one."""
    with _opened(path, unlock=False) as (total, _pages):
        return total


def load_pdf(path: Path, on_page: PageProgress | None = None) -> list[tuple[str, dict[str, Any]]]:
    """One element per page: its blocks in reading order, tables as Markdown, scans OCR'd."""
    with _opened(path) as (total, pages):
        try:
            read = list(_read_pages(pages, total, path, on_page))
        except LoaderError:
            raise
        except Exception as exc:  # a page that cannot be parsed
            raise _corrupt(path, exc) from exc
    furniture = _running_furniture(read)
    elements = []
    carried: list[list[str]] | None = None  # a table that ended the previous page
    for number, (blocks, width, _height) in enumerate(read, start=1):
        kept = _reading_order([block for block in blocks
                               if block.rows is not None or _key(block) not in furniture], width)
        for index, block in enumerate(kept):
            if block.rows is not None:
                if index == 0 and carried is not None:
                    block.rows = _continued(block.rows, carried)
                block.text = markdown_table(block.rows)
        carried = kept[-1].rows if kept and kept[-1].rows is not None else None
        elements.append(("\n".join(block.text for block in kept if block.text), {"page": number}))
    return elements


@contextmanager
def _opened(path: Path, unlock: bool = True) -> Iterator[tuple[int, Iterator[_Page]]]:
    """The page count and the pages, read lazily, from PyMuPDF if installed, else PDFium.

    Without ``unlock``, PyMuPDF counts the pages of an encrypted PDF without reading them.
    """
    if layout_available():
        with _opened_pymupdf(path, unlock) as opened:
            yield opened
    else:
        _note_plain_backend()
        with _opened_pdfium(path) as opened:
            yield opened


@contextmanager
def _opened_pymupdf(path: Path, unlock: bool) -> Iterator[tuple[int, Iterator[_Page]]]:
    pymupdf = _pymupdf()
    try:
        document = pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # PyMuPDF raises FileDataError, RuntimeError, ValueError...
        raise _corrupt(path, exc) from exc
    with document:
        if unlock and document.needs_pass and not document.authenticate(""):
            raise _encrypted(path)
        yield document.page_count, (_pymupdf_page(page) for page in document)


def _pymupdf_page(page: Any) -> _Page:
    return _Page(_page_blocks(page), page.rect.width, page.rect.height,
                 has_images=lambda: bool(page.get_images()), render=lambda: _pymupdf_render(page))


@contextmanager
def _opened_pdfium(path: Path) -> Iterator[tuple[int, Iterator[_Page]]]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    with _pdfium_lock:
        try:
            document = pdfium.PdfDocument(path)  # an empty user password is tried by PDFium itself
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
                raise _encrypted(path) from exc
            raise _corrupt(path, exc) from exc
        try:
            yield len(document), (_pdfium_page(document[index]) for index in range(len(document)))
        finally:
            document.close()


def _pdfium_page(page: Any) -> _Page:
    """The page's text in PDFium's order as one block over the whole page (no layout: the
    header/footer and column steps leave it as it is)."""
    import pypdfium2.raw as pdfium_c

    lines = (line.strip() for line in page.get_textpage().get_text_range().splitlines())
    text = "\n".join(line for line in lines if line)
    width, height = page.get_size()
    return _Page([_Block(0, 0, width, height, text)] if text else [], width, height,
                 has_images=lambda: next(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]),
                                         None) is not None,
                 render=lambda: page.render(scale=_OCR_DPI / 72, grayscale=True).to_pil())


def page_png(path: Path, number: int, *, width: int = 1000) -> bytes:
    """Page `number` (1-based) of a PDF as a PNG about `width` pixels wide, so a reader can see a
    cited page as printed; LoaderError when the file or the page cannot be read."""
    import io

    import pypdfium2 as pdfium

    with _pdfium_lock:  # PDFium is not thread-safe; the web app renders from several sessions
        try:
            document = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as exc:
            raise _corrupt(path, exc) from exc
        try:
            if not 1 <= number <= len(document):
                raise LoaderError(f"{path.name} has {len(document)} pages, not a page {number}")
            page = document[number - 1]
            image = page.render(scale=width / page.get_width()).to_pil()
        finally:
            document.close()
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _encrypted(path: Path) -> LoaderError:
    return LoaderError(f"{path.name}: encrypted PDF; remove its password first")


def _continued(rows: list[list[str]], previous: list[list[str]]) -> list[list[str]]:
    """A table that opens a page with as many columns as the one that closed the last page goes
    on with it: it gets that table's header unless it repeats it already."""
    if len(rows[0]) != len(previous[0]) or rows[0] == previous[0]:
        return rows
    return [previous[0], *rows]


def _corrupt(path: Path, exc: BaseException) -> LoaderError:
    detail = " ".join(str(exc).split())[:200]
    return LoaderError(f"{path.name}: corrupt or not a valid PDF file ({type(exc).__name__}: {detail})")


def _read_pages(pages: Iterable[_Page], total: int, path: Path,
                on_page: PageProgress | None) -> Iterator[tuple[list[_Block], float, float]]:
    """Per page: (blocks with furniture still in, page width, page height).

    Scanned pages are rendered here, in the reading thread, and OCR'd a few at a time.
    """
    skipped: list[int] = []

    def jobs() -> Iterator[Callable[[], tuple[list[_Block], float, float]] | Ready[Any]]:
        for number, page in enumerate(pages, start=1):
            blocks, width, height = page.blocks, page.width, page.height
            if sum(map(_chars, blocks)) < _SCAN_MAX_CHARS and page.has_images():
                if ocr_available():
                    yield _ocr_job(page.render(), f"{path.name} page {number}", width, height)
                    continue
                skipped.append(number)
            yield Ready((blocks, width, height))

    for number, read in enumerate(in_order(jobs()), start=1):
        yield read
        if on_page:
            on_page(number, total)
    if skipped and len(skipped) == total:
        raise LoaderError(f"{path.name}: a scanned PDF (no text layer); {INSTALL_HINT}")
    if skipped:
        log.warning("%s: pages %s are scans and were not read; %s", path.name,
                    ", ".join(map(str, skipped)), INSTALL_HINT)


def _ocr_job(image: Image, name: str, width: float,
             height: float) -> Callable[[], tuple[list[_Block], float, float]]:
    """OCR of one rendered page, to run on an OCR thread: the page as one block."""
    return lambda: ([_Block(0, 0, width, height, ocr_image(image, name))], width, height)


def _chars(block: _Block) -> int:
    """Characters of text in a line or a table."""
    if block.rows is None:
        return len(block.text.strip())
    return sum(len(cell) for row in block.rows for cell in row)


def _page_blocks(page: Any) -> list[_Block]:
    """Text lines outside tables, and each table as one Markdown block."""
    # PyMuPDF finds tables from their ruling, which is vector graphics: a page without any has
    # none to find, and the search costs far more than reading the text (docs/benchmarks.md §11).
    found = page.find_tables().tables if page.get_cdrawings() else []
    tables = [table for table in found if table.row_count >= 1]
    blocks = [_Block(*table.bbox, "", rows=_cells(table.extract())) for table in tables]
    # Lines, not PyMuPDF's blocks: a block can join a left-column line to the right-column
    # line on the same baseline.
    lines = (line for block in page.get_text("dict")["blocks"] if block["type"] == 0
             for line in block["lines"])
    for line in lines:
        text = "".join(span["text"] for span in line["spans"]).strip()
        x0, y0, x1, y1 = line["bbox"]
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        if not text or any(t.x0 <= centre[0] <= t.x1 and t.y0 <= centre[1] <= t.y1
                           for t in blocks[:len(tables)]):
            continue  # blank, or a table cell: the table block has it
        blocks.append(_Block(x0, y0, x1, y1, text))
    return blocks


def _cells(rows: list[list[str | None]]) -> list[list[str]]:
    """Cell texts on one line each; merged cells (None) empty."""
    return [[" ".join((cell or "").split()) for cell in row] for row in rows]


def _pymupdf_render(page: Any) -> Image:
    """The page as a greyscale image at the OCR resolution."""
    from PIL import Image

    pymupdf = _pymupdf()

    pixmap = page.get_pixmap(dpi=_OCR_DPI, colorspace=pymupdf.csGRAY)
    return Image.frombytes("L", (pixmap.width, pixmap.height), pixmap.samples)


def _key(block: _Block) -> str:
    """A block's text with digits generalised: "第3页" and "第4页" are the same footer."""
    return re.sub(r"\d+", "#", " ".join(block.text.split()))


def _running_furniture(pages: list[tuple[list[_Block], float, float]]) -> set[str]:
    """Texts in the top or bottom band of at least half the pages (two at least), and page numbers."""
    counts: Counter[str] = Counter()
    numbers: set[str] = set()
    for blocks, _width, height in pages:
        seen = set()
        for block in blocks:
            if block.rows is not None:
                continue
            if block.y1 <= height * _FURNITURE_BAND or block.y0 >= height * (1 - _FURNITURE_BAND):
                seen.add(_key(block))
                if _PAGE_NUMBER.match(block.text.strip()):
                    numbers.add(_key(block))
        counts.update(seen)
    needed = max(2, (len(pages) + 1) // 2)
    return {key for key, count in counts.items() if count >= needed} | numbers


def _reading_order(blocks: list[_Block], width: float) -> list[_Block]:
    """Top to bottom; between blocks that cross the page's middle, a two-column stretch is read
    left column first, then the right one."""
    middle = width / 2
    ordered: list[_Block] = []
    band: list[_Block] = []
    for block in sorted(blocks, key=lambda b: (round(b.y0), b.x0)):
        if block.x0 < middle < block.x1:
            ordered.extend(_columns(band, middle, width))
            band = []
            ordered.append(block)
        else:
            band.append(block)
    ordered.extend(_columns(band, middle, width))
    return ordered


def _columns(band: list[_Block], middle: float, width: float) -> Iterable[_Block]:
    left = [block for block in band if block.x1 <= middle]
    right = [block for block in band if block.x0 >= middle]
    if not left or not right or not all(_wide(side, width) for side in (left, right)):
        return band  # one column, or labels beside values: top to bottom as it stands
    return [*left, *right]


def _wide(blocks: list[_Block], width: float) -> bool:
    widths = sorted(block.x1 - block.x0 for block in blocks)
    return widths[len(widths) // 2] >= _COLUMN_MIN_WIDTH * width


def load_image(path: Path, on_page: PageProgress | None = None) -> list[tuple[str, dict[str, Any]]]:
    """OCR each frame of an image file (a TIFF can hold many pages), with its page number."""
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    if not ocr_available():
        raise LoaderError(f"{path.name}: an image, read only by OCR; {INSTALL_HINT}")
    try:
        with Image.open(path) as image:
            frames = [ImageOps.exif_transpose(frame.copy()) for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise LoaderError(f"{path.name}: corrupt or not a valid image ({type(exc).__name__}: "
                          f"{detail})") from exc
    jobs = (lambda frame=frame, number=number: ocr_image(frame, f"{path.name} page {number}")
            for number, frame in enumerate(frames, start=1))
    elements = []
    for number, text in enumerate(in_order(jobs), start=1):
        elements.append((text, {"page": number}))
        if on_page:
            on_page(number, len(frames))
    return elements
