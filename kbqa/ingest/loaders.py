"""File → text elements, one loader per format, each returning LangChain Documents.

unstructured parses every format but PDF and images (its PDF path needs a layout model we cannot
ship); kbqa/ingest/pdf.py reads PDFs page by page (PyMuPDF with the pdf extra, else pypdfium2),
and scanned pages and images go through OCR (kbqa/ingest/ocr.py). unstructured is imported
lazily: it takes seconds to import.
Element *types* are not trusted for Chinese (plain paragraphs come back as ``Title``), so headings
come from real structure only: Markdown/HTML heading tags, DOCX heading styles, PPTX slide titles.
Tables become Markdown tables with their header row (kbqa/ingest/tables.py).
"""

from __future__ import annotations

import copy
import io
import os
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from kbqa.errors import LoaderError, UnsupportedFormatError
from kbqa.ingest.encoding import decode_text
from kbqa.ingest.ocr import PageProgress
from kbqa.ingest.offline_nlp import install_offline_nlp
from kbqa.ingest.tables import html_table

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

# unstructured prints a sales notice on first use (stdout on a terminal): kbqa logs nothing there.
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
)
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".pdf", ".docx", ".pptx", ".xlsx", ".html", ".htm", ".md", ".markdown", ".txt", ".csv", ".eml"}
) | IMAGE_SUFFIXES
# Formats read as text: their content is sniffed first, so a photo renamed .txt is refused by name.
_TEXT_SUFFIXES = frozenset({".html", ".htm", ".md", ".markdown", ".txt", ".csv", ".eml"})
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
# Office files are zip archives; a few KB can unpack to gigabytes (a "zip bomb"). The parsers
# hold a whole member's XML tree in memory, several times the member's size, so the bound on
# unpacked bytes is what bounds a load's memory (measured in docs/benchmarks.md).
DEFAULT_MAX_UNZIPPED_BYTES = 256 * 1024 * 1024
# Office XML deflates about 5-20:1; a member that claims more than this ratio is refused before
# it is inflated at all. Members under _RATIO_FLOOR are not judged (tiny parts may compress well).
DEFAULT_MAX_UNZIP_RATIO = 100
_RATIO_FLOOR = 1024 * 1024
_ZIP_PROBE_BYTES = 16 * 1024

_ZIP_FORMATS = {".docx": "DOCX", ".pptx": "PPTX", ".xlsx": "XLSX"}
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")
# A plain-text file's first line is its title when at most this long and not ending a clause.
_TITLE_MAX_CHARS = 50
_CLAUSE_ENDINGS = ("。", "；", "，", "、", "：", ".", ";", ",", ":")
# Repeated page furniture and layout markers, not content.
_SKIPPED_CATEGORIES = frozenset({"Header", "Footer", "PageBreak"})
# Stated, not detected: unstructured otherwise runs langdetect over every element, which made
# partitioning Chinese .txt files several times slower (docs/benchmarks.md §Ingest and
# embedding speed), and kbqa drops the language metadata anyway. Texts and types came out
# identical on those files.
_LANGUAGES = ["zho", "eng"]

Meta = dict[str, Any]


def load_file(
    path: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_unzipped_bytes: int = DEFAULT_MAX_UNZIPPED_BYTES,
    max_unzip_ratio: int | None = DEFAULT_MAX_UNZIP_RATIO,
    on_page: PageProgress | None = None,
) -> list[Document]:
    """Read one file into Documents, one per text element, in document order.

    Metadata: ``source`` (resolved path), ``filename``, ``heading`` (nearest section title or
    None), plus ``page`` (1-based: PDF pages, PPTX slides, image frames) or ``sheet`` (XLSX).
    ``on_page(done, total)`` is called after each page of a PDF or image (OCR is slow).
    Raises UnsupportedFormatError for unknown extensions and LoaderError, with a one-line
    message naming the file, for anything that cannot be read or holds no text.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = " ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnsupportedFormatError(
            f"{path.name}: unsupported file type {suffix or '(no extension)'!r}; supported: {supported}"
        )
    resolved = _checked_path(path, max_bytes)
    if suffix in _ZIP_FORMATS:
        _check_zip(resolved, _ZIP_FORMATS[suffix], max_unzipped_bytes, max_unzip_ratio)
    if suffix in _TEXT_SUFFIXES:
        _refuse_binary_content(resolved)
    base: Meta = {"source": str(resolved), "filename": resolved.name}
    if suffix in _PAGED_LOADERS:
        elements = _PAGED_LOADERS[suffix](resolved, on_page)
    else:
        elements = _LOADERS[suffix](resolved)
    docs = [
        Document(page_content=text, metadata={**base, "heading": None, **meta})
        for text, meta in elements
        if text.strip()
    ]
    if not docs:
        raise LoaderError(f"{resolved.name}: no extractable text (a scanned PDF or an image-only file?)")
    return docs


def _checked_path(path: Path, max_bytes: int) -> Path:
    """Resolve ``path`` and refuse what cannot or should not be read, before parsing anything."""
    try:
        resolved = path.resolve(strict=True)
        size = resolved.stat().st_size
    except FileNotFoundError:
        raise LoaderError(f"{path}: no such file") from None
    except OSError as exc:
        raise LoaderError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not resolved.is_file():
        raise LoaderError(f"{path}: not a regular file")
    if not os.access(resolved, os.R_OK):
        raise LoaderError(f"{path}: permission denied")
    if size == 0:
        raise LoaderError(f"{resolved.name}: empty file")
    if size > max_bytes:
        raise LoaderError(f"{resolved.name}: {size} bytes, larger than the {max_bytes}-byte limit")
    return resolved


def _refuse_binary_content(path: Path) -> None:
    """Refuse a text-format file that is another format (a PNG named .txt), naming what it is.

    A signature alone is not enough ("BM" opens a BMP, and "BMW是一家公司。" too): a format kbqa
    reads must open as that format, any other must fail to read as text.
    """
    import filetype

    with path.open("rb") as handle:
        kind = filetype.guess(handle.read(8192))
    if kind is None or not _is_really(path, f".{kind.extension}"):
        return
    raise LoaderError(
        f"{path.name}: the content is {kind.mime} (a .{kind.extension} file), not text; "
        f"rename it to .{kind.extension} if that is what it is"
    )


def _is_really(path: Path, suffix: str) -> bool:
    """Whether ``path`` opens as a ``suffix`` file (formats kbqa reads), or else is not text."""
    if suffix in IMAGE_SUFFIXES:
        return _opens(lambda: _verify_image(path))
    if suffix == ".pdf":
        from kbqa.ingest.pdf import page_count

        return _opens(lambda: page_count(path) > 0)
    if suffix in _ZIP_FORMATS or suffix == ".zip":
        return zipfile.is_zipfile(path)
    try:
        decode_text(path.read_bytes(), path.name)
    except LoaderError:
        return True
    return False


def _opens(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # noqa: BLE001 - a parser's failure, whatever its type, means "not that"
        return False


def _verify_image(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    return True


def _check_zip(path: Path, kind: str, max_unzipped_bytes: int,
               max_ratio: int | None = DEFAULT_MAX_UNZIP_RATIO) -> None:
    """Refuse a non-zip, one whose members declare more than the limit, one with a member that
    declares more than `max_ratio` times its compressed size, or one with a member that unpacks
    to more than it declares (see `_member_problem`). Only the last inflates anything, and only
    once the declared sizes passed."""
    problems: list[str] = []
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked <= max_unzipped_bytes:
                problems = [problem for info in archive.infolist()
                            if (problem := _ratio_problem(info, max_ratio))]
            if unpacked <= max_unzipped_bytes and not problems:
                problems = [problem for info in archive.infolist()
                            if (problem := _member_problem(archive, info))]
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise _corrupt(path, kind, exc) from exc
    if unpacked > max_unzipped_bytes:
        raise LoaderError(
            f"{path.name}: unpacks to {unpacked} bytes, over the {max_unzipped_bytes}-byte limit "
            "(refused as a possible zip bomb)"
        )
    if problems:
        raise LoaderError(f"{path.name}: {problems[0]} (refused as a possible zip bomb)")


def _ratio_problem(info: zipfile.ZipInfo, max_ratio: int | None) -> str | None:
    """Why a member's declared sizes alone are too suspicious to inflate, or None."""
    if max_ratio is None or info.file_size < _RATIO_FLOOR:
        return None
    if info.file_size > max_ratio * max(info.compress_size, 1):
        return (f"{info.filename} declares {info.file_size} bytes from {info.compress_size}, "
                f"over the {max_ratio}:1 compression limit")
    return None


def _member_problem(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    """Why a member could unpack past its declared size, after inflating it in small pieces.

    zipfile's read() inflates a member's whole stream in one call (up to 2 GB) and only then
    cuts it to the declared size, so a few hundred KB declaring a few KB took gigabytes. Office
    files store or deflate their members; zipfile inflates other methods (bzip2, lzma) with no
    bound at all, so those are refused.
    """
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"{info.filename} uses compression method {info.compress_type}, not one of Office's"
    probe = copy.copy(info)
    probe.file_size = info.file_size + 1  # one byte past the declared size, if there is one
    probe.CRC = None  # no CRC check here: the loader checks it when it reads the member
    size = 0
    with archive.open(probe) as member:
        while piece := member.read(_ZIP_PROBE_BYTES):
            size += len(piece)
    if size > info.file_size:
        return f"{info.filename} unpacks to more than the {info.file_size} bytes it declares"
    return None


def _corrupt(path: Path, kind: str, exc: BaseException) -> LoaderError:
    detail = " ".join(str(exc).split())[:200]
    return LoaderError(f"{path.name}: corrupt or not a valid {kind} file ({type(exc).__name__}: {detail})")


# --- PDF (kbqa/ingest/pdf.py) and images (OCR) --------------------------------------------------


def _load_pdf(path: Path, on_page: PageProgress | None) -> Iterable[tuple[str, Meta]]:
    from kbqa.ingest.pdf import load_pdf

    return load_pdf(path, on_page)


def _load_image(path: Path, on_page: PageProgress | None) -> Iterable[tuple[str, Meta]]:
    from kbqa.ingest.pdf import load_image

    return load_image(path, on_page)


# --- unstructured-based formats -----------------------------------------------------------------


def _partition(path: Path, kind: str, partition: Callable[[], list[Element]]) -> list[Element]:
    """Run an unstructured partitioner offline, turning its failures into LoaderError."""
    install_offline_nlp()
    try:
        return partition()
    except Exception as exc:  # unstructured and the libraries below it raise many types
        raise _corrupt(path, kind, exc) from exc


def _element_text(element: Element) -> str:
    """Element text; a table becomes a Markdown table, its first row the header."""
    html = getattr(element.metadata, "text_as_html", None)
    if element.category != "Table" or not html:
        return element.text.strip()
    return html_table(html)


def _with_headings(
    elements: Iterable[Element], is_heading: Callable[[Element], bool]
) -> Iterable[tuple[str, Meta]]:
    """Pair each element with the nearest heading at or before it."""
    heading: str | None = None
    for element in elements:
        if element.category in _SKIPPED_CATEGORIES:
            continue
        text = _element_text(element)
        if is_heading(element) and text:
            heading = text
        yield text, {"heading": heading}


def _is_title(element: Element) -> bool:
    """For HTML (and Markdown, rendered to HTML) and DOCX, unstructured makes a ``Title`` only
    from heading tags or heading paragraph styles, never from text heuristics."""
    return element.category == "Title"


def _never(_: Element) -> bool:
    return False


def _load_text(path: Path) -> Iterable[tuple[str, Meta]]:
    """One element per paragraph (blank-line separated), text kept exactly; the first line is
    every paragraph's heading when it reads as a title (see `_text_title`).

    Not unstructured's partition_text: it takes "·" for a list bullet, so it cut 艾萨克·阿西莫夫 and
    《论语·颜渊》 apart and dropped the dot (common in CMRC 2018: docs/benchmarks.md §Retrieval
    tuning). Answers that quote such a name were then in no chunk at all.
    """
    text = decode_text(path.read_bytes(), path.name)
    heading = _text_title(text)
    return [(paragraph.strip(), {"heading": heading}) for paragraph in _BLANK_LINE.split(text)]


def _text_title(text: str) -> str | None:
    """The first line of a plain-text file if it looks like a title: short, not ending a clause."""
    first = text.strip().split("\n", 1)[0].strip()
    if not first or len(first) > _TITLE_MAX_CHARS or first.endswith(_CLAUSE_ENDINGS):
        return None
    return first


def _load_markdown(path: Path) -> Iterable[tuple[str, Meta]]:
    from unstructured.partition.md import partition_md

    text = decode_text(path.read_bytes(), path.name)
    elements = _partition(path, "Markdown", lambda: partition_md(text=text, languages=_LANGUAGES))
    return _with_headings(elements, _is_title)


def _load_html(path: Path) -> Iterable[tuple[str, Meta]]:
    from unstructured.partition.html import partition_html

    text = decode_text(path.read_bytes(), path.name)
    elements = _partition(path, "HTML", lambda: partition_html(text=text, languages=_LANGUAGES))
    return _with_headings(elements, _is_title)


def _load_csv(path: Path) -> Iterable[tuple[str, Meta]]:
    from unstructured.partition.csv import partition_csv

    data = decode_text(path.read_bytes(), path.name).encode("utf-8")
    elements = _partition(path, "CSV", lambda: partition_csv(
        file=io.BytesIO(data), encoding="utf-8", languages=_LANGUAGES))
    return _with_headings(elements, _never)


def _load_email(path: Path) -> Iterable[tuple[str, Meta]]:
    """The body only (attachments are not parsed); the subject serves as the heading."""
    from unstructured.partition.email import partition_email

    elements = _partition(
        path,
        "EML",
        lambda: partition_email(filename=str(path), process_attachments=False,
                                languages=_LANGUAGES),
    )
    subject = elements[0].metadata.subject if elements else None
    for text, _ in _with_headings(elements, _never):
        yield text, {"heading": subject or None}


def _load_docx(path: Path) -> Iterable[tuple[str, Meta]]:
    from unstructured.partition.docx import partition_docx

    elements = _partition(path, "DOCX", lambda: partition_docx(
        filename=str(path), include_page_breaks=False, languages=_LANGUAGES))
    return _with_headings(elements, _is_title)


def _load_pptx(path: Path) -> Iterable[tuple[str, Meta]]:
    """One element per text shape paragraph; the heading is the slide's title placeholder."""
    from unstructured.partition.pptx import partition_pptx

    elements = _partition(path, "PPTX", lambda: partition_pptx(
        filename=str(path), include_page_breaks=False, languages=_LANGUAGES))
    titles = _slide_titles(path)
    for element in elements:
        if element.category in _SKIPPED_CATEGORIES:
            continue
        slide = element.metadata.page_number or 1
        yield _element_text(element), {"page": slide, "heading": titles.get(slide)}


def _slide_titles(path: Path) -> dict[int, str]:
    """Slide number → text of its title placeholder (body text typed ``Title`` is not one)."""
    from pptx import Presentation

    titles: dict[int, str] = {}
    for number, slide in enumerate(Presentation(str(path)).slides, start=1):
        shape = slide.shapes.title
        if shape is not None and shape.text_frame.text.strip():
            titles[number] = " ".join(shape.text_frame.text.split())
    return titles


def _load_xlsx(path: Path) -> Iterable[tuple[str, Meta]]:
    """One table per worksheet, one line per row."""
    from unstructured.partition.xlsx import partition_xlsx

    elements = _partition(path, "XLSX", lambda: partition_xlsx(
        filename=str(path), find_subtable=False, languages=_LANGUAGES))
    for element in elements:
        yield _element_text(element), {"sheet": element.metadata.page_name}


_PAGED_LOADERS: dict[str, Callable[[Path, PageProgress | None], Iterable[tuple[str, Meta]]]] = {
    ".pdf": _load_pdf,
    **{suffix: _load_image for suffix in IMAGE_SUFFIXES},
}
_LOADERS: dict[str, Callable[[Path], Iterable[tuple[str, Meta]]]] = {
    ".docx": _load_docx,
    ".pptx": _load_pptx,
    ".xlsx": _load_xlsx,
    ".html": _load_html,
    ".htm": _load_html,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".txt": _load_text,
    ".csv": _load_csv,
    ".eml": _load_email,
}
