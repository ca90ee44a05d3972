"""load_file: every supported format, its metadata, the offline spaCy route and every refusal."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import uuid
import zipfile
import zlib
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest
from langchain_core.documents import Document
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from kbqa.errors import KbqaError, LoaderError, UnsupportedFormatError
from kbqa.ingest import SUPPORTED_SUFFIXES, load_file
from kbqa.ingest.loaders import IMAGE_SUFFIXES
from kbqa.ingest.offline_nlp import install_offline_nlp, offline_pipeline
from tests.doc_samples import render_page


def texts(docs: list[Document]) -> list[str]:
    return [doc.page_content for doc in docs]


def by_text(docs: list[Document], text: str) -> Document:
    return next(doc for doc in docs if text in doc.page_content)


# --- fixture builders --------------------------------------------------------------------------


def make_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A PDF in reportlab's built-in CID font: Chinese text without any font file."""
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    pdf = canvas.Canvas(str(path))
    for lines in pages:
        pdf.setFont("STSong-Light", 12)
        for row, line in enumerate(lines):
            pdf.drawString(72, 760 - 20 * row, line)
        pdf.showPage()
    pdf.save()
    return path


def make_docx(path: Path, body: str = "星河一号是一款智能音箱，售价699元。") -> Path:
    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "内部资料 请勿外传"
    document.add_heading("产品概述", level=1)
    document.add_paragraph(body)
    document.add_paragraph("短句")  # unstyled: must not become a heading
    document.add_heading("技术参数", level=2)
    table = document.add_table(rows=2, cols=2)
    for row, (key, value) in enumerate([("重量", "500克"), ("续航", "12小时")]):
        table.cell(row, 0).text, table.cell(row, 1).text = key, value
    document.save(str(path))
    return path


def make_pptx(path: Path) -> Path:
    deck = pptx.Presentation()
    for title, body in [("年度目标", "营收增长百分之三十"), ("市场计划", "进入东南亚市场\n北京")]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    deck.save(str(path))
    return path


def make_xlsx(path: Path) -> Path:
    book = openpyxl.Workbook()
    prices = book.active
    prices.title = "价格"
    for row in [("产品", "价格"), ("基础版", "999元"), ("专业版", "2999元")]:
        prices.append(row)
    stock = book.create_sheet("库存")
    for row in [("仓库", "数量"), ("杭州", "120")]:
        stock.append(row)
    book.save(str(path))
    return path


def make_eml(path: Path, charset: str) -> Path:
    message = EmailMessage()
    message["Subject"] = "关于年会的通知"
    message["From"] = "hr@xinghe.example"
    message["To"] = "all@xinghe.example"
    message.set_content("各位同事：\n\n年会将于2025年1月18日在杭州举行。\n\n请准时参加。\n", charset=charset)
    path.write_bytes(message.as_bytes())
    return path


# --- formats -----------------------------------------------------------------------------------


def test_pdf_pages_and_chinese_text(tmp_path: Path) -> None:
    path = make_pdf(
        tmp_path / "价格表.pdf",
        [["价格表", "基础版每年999元，专业版每年2999元。"], ["售后电话400-123-4567。"]],
    )
    docs = load_file(path)
    assert [doc.metadata["page"] for doc in docs] == [1, 2]
    assert "基础版每年999元，专业版每年2999元。" in docs[0].page_content
    assert docs[1].page_content == "售后电话400-123-4567。"
    assert docs[0].metadata == {
        "source": str(path.resolve()),
        "filename": "价格表.pdf",
        "heading": None,
        "page": 1,
    }


def test_pdf_page_png_is_the_page_asked_for(tmp_path: Path) -> None:
    """The web app's view of a cited PDF page: that page, as an image of the asked width, and a
    clear error for a page the file does not have."""
    import io

    from PIL import Image

    from kbqa.ingest.pdf import page_png

    path = make_pdf(tmp_path / "两页.pdf", [["第一页"], ["第二页" * 10]])
    first, second = (Image.open(io.BytesIO(page_png(path, n, width=400))) for n in (1, 2))
    assert first.format == second.format == "PNG"
    assert abs(first.width - 400) <= 1 and first.height > first.width  # A4 portrait
    # page 2 has more text than page 1: more dark pixels
    dark = [sum(1 for v in img.convert("L").getdata() if v < 128) for img in (first, second)]
    assert dark[1] > dark[0] > 0, dark
    with pytest.raises(LoaderError, match="has 2 pages, not a page 3"):
        page_png(path, 3)
    (tmp_path / "坏.pdf").write_bytes(b"%PDF-1.4 broken")
    with pytest.raises(LoaderError, match="corrupt or not a valid PDF"):
        page_png(tmp_path / "坏.pdf", 1)


def test_docx_headings_from_styles_table_as_markdown_and_no_page_header(tmp_path: Path) -> None:
    docs = load_file(make_docx(tmp_path / "product.docx"))
    assert texts(docs) == [
        "产品概述",
        "星河一号是一款智能音箱，售价699元。",
        "短句",
        "技术参数",
        "| 重量 | 500克 |\n| --- | --- |\n| 续航 | 12小时 |",
    ]
    assert [doc.metadata["heading"] for doc in docs] == ["产品概述"] * 3 + ["技术参数"] * 2
    assert all("page" not in doc.metadata and "sheet" not in doc.metadata for doc in docs)


def test_pptx_slides_and_titles(tmp_path: Path) -> None:
    docs = load_file(make_pptx(tmp_path / "plan.pptx"))
    assert texts(docs) == ["年度目标", "营收增长百分之三十", "市场计划", "进入东南亚市场", "北京"]
    assert [doc.metadata["page"] for doc in docs] == [1, 1, 2, 2, 2]
    # unstructured types all of this body text Title; the heading stays the slide title.
    assert [doc.metadata["heading"] for doc in docs] == ["年度目标"] * 2 + ["市场计划"] * 3


def test_xlsx_one_markdown_table_per_sheet_with_its_header(tmp_path: Path) -> None:
    docs = load_file(make_xlsx(tmp_path / "prices.xlsx"))
    assert [doc.metadata["sheet"] for doc in docs] == ["价格", "库存"]
    assert docs[0].page_content == "| 产品 | 价格 |\n| --- | --- |\n| 基础版 | 999元 |\n| 专业版 | 2999元 |"
    assert docs[1].page_content == "| 仓库 | 数量 |\n| --- | --- |\n| 杭州 | 120 |"
    assert all("page" not in doc.metadata for doc in docs)


def test_markdown_headings(tmp_path: Path) -> None:
    path = tmp_path / "handbook.md"
    path.write_text(
        "# 考勤\n\n上班时间为每天9:00至18:00。\n\n短句\n\n## 迟到\n\n- 迟到三次扣款100元。\n",
        encoding="utf-8",
    )
    docs = load_file(path)
    assert texts(docs) == ["考勤", "上班时间为每天9:00至18:00。", "短句", "迟到", "迟到三次扣款100元。"]
    assert [doc.metadata["heading"] for doc in docs] == ["考勤"] * 3 + ["迟到"] * 2


def test_html_in_gbk_headings_from_h_tags(tmp_path: Path) -> None:
    path = tmp_path / "policy.htm"
    html = (
        "<html><head><meta charset='gbk'><title>页面标题</title></head><body>"
        "<h1>报销</h1><p>报销须在30天内提交。</p><p>住宿标准</p><h2>差旅</h2><p>高铁二等座。</p></body></html>"
    )
    path.write_bytes(html.encode("gbk"))
    docs = load_file(path)
    assert texts(docs) == ["报销", "报销须在30天内提交。", "住宿标准", "差旅", "高铁二等座。"]
    assert [doc.metadata["heading"] for doc in docs] == ["报销"] * 3 + ["差旅"] * 2


def test_csv_in_gbk_as_a_markdown_table_with_its_header(tmp_path: Path) -> None:
    path = tmp_path / "phones.csv"
    path.write_bytes("姓名,部门,分机\n张三,研发部,1001\n李四,市场部,1002\n".encode("gbk"))
    (doc,) = load_file(path)
    assert doc.page_content == ("| 姓名 | 部门 | 分机 |\n| --- | --- | --- |\n"
                                "| 张三 | 研发部 | 1001 |\n| 李四 | 市场部 | 1002 |")


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "big5", "utf-8-sig", "utf-16"])
def test_txt_encodings(tmp_path: Path, encoding: str) -> None:
    lines = ["公司簡介", "星河智能科技有限公司成立於2015年。", "員工共有320人。"]
    path = tmp_path / f"faq-{encoding}.txt"
    path.write_bytes("\r\n\r\n".join(lines).encode(encoding))
    docs = load_file(path)
    assert texts(docs) == lines
    # a short first line that does not end a clause is the file's title: every paragraph's heading
    assert all(doc.metadata["heading"] == "公司簡介" for doc in docs)


def test_txt_keeps_middle_dots_and_takes_only_a_title_like_first_line(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    body = "《捉兔记》是艾萨克·阿西莫夫的小说，\n校名取义《论语·颜渊》。"
    path.write_text(f"捉兔记\n\n{body}\n\n  \n• 第二段", encoding="utf-8")
    docs = load_file(path)
    assert texts(docs) == ["捉兔记", body, "• 第二段"]  # unstructured split at each "·" and dropped it
    assert {doc.metadata["heading"] for doc in docs} == {"捉兔记"}
    path.write_text(body, encoding="utf-8")  # the first line ends a clause: a sentence, no title
    assert [doc.metadata["heading"] for doc in load_file(path)] == [None]


@pytest.mark.parametrize("charset", ["utf-8", "gbk"])
def test_eml_body_with_subject_as_heading(tmp_path: Path, charset: str) -> None:
    docs = load_file(make_eml(tmp_path / f"notice-{charset}.eml", charset))
    assert texts(docs) == ["各位同事：", "年会将于2025年1月18日在杭州举行。", "请准时参加。"]
    assert {doc.metadata["heading"] for doc in docs} == {"关于年会的通知"}


MARKER = "星河一号的保修期为两年。"


def make_sample(path: Path) -> Path:
    """A small real file of `path`'s type whose text includes MARKER."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return make_pdf(path, [["产品说明", MARKER]])
    if suffix == ".docx":
        return make_docx(path, MARKER)
    if suffix == ".pptx":
        deck = pptx.Presentation()
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text, slide.placeholders[1].text = "保修", MARKER
        deck.save(str(path))
        return path
    if suffix == ".xlsx":
        book = openpyxl.Workbook()
        book.active.append(("说明", MARKER))
        book.save(str(path))
        return path
    if suffix == ".eml":
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = "保修", "a@x.example", "b@x.example"
        message.set_content(MARKER + "\n", charset="utf-8")
        path.write_bytes(message.as_bytes())
        return path
    if suffix in IMAGE_SUFFIXES:  # a photo of a page: read by OCR
        render_page(["产品说明", MARKER], dpi=200, width_inches=5).save(path)
        return path
    text = {
        ".html": f"<html><body><h1>保修</h1><p>{MARKER}</p></body></html>",
        ".htm": f"<html><body><h1>保修</h1><p>{MARKER}</p></body></html>",
        ".md": f"# 保修\n\n{MARKER}\n",
        ".markdown": f"# 保修\n\n{MARKER}\n",
        ".txt": f"保修\n\n{MARKER}\n",
        ".csv": f"产品,说明\n星河一号,{MARKER}\n",
    }.get(suffix)
    if text is None:
        raise AssertionError(f"no sample file for the advertised suffix {suffix}: add one here")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
def test_every_advertised_suffix_loads_a_real_file(tmp_path: Path, suffix: str) -> None:
    """Each suffix kbqa advertises (and uploads accept) is parsed by its loader, in any case."""
    for name in (f"sample{suffix}", f"SAMPLE{suffix.upper()}"):
        path = make_sample(tmp_path / name)
        docs = load_file(path)
        assert any(MARKER in doc.page_content for doc in docs), texts(docs)
        assert not any("<" in doc.page_content or "# " in doc.page_content for doc in docs)  # parsed
        assert {doc.metadata["filename"] for doc in docs} == {name}


@pytest.mark.parametrize("name", ["old.doc", "sheet.xls", "data.json", "slides.ppt", "notes", "a.tar.gz"])
def test_unadvertised_suffixes_are_refused_naming_the_supported_ones(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(MARKER, encoding="utf-8")  # readable text: the suffix alone decides
    with pytest.raises(UnsupportedFormatError) as error:
        load_file(path)
    assert_one_line(error, name)
    assert all(suffix in str(error.value) for suffix in SUPPORTED_SUFFIXES)


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "NOTES.TXT"
    path.write_text("大写扩展名也能读取。", encoding="utf-8")
    assert texts(load_file(path)) == ["大写扩展名也能读取。"]


# --- the offline spaCy route -------------------------------------------------------------------


def test_unstructured_never_tries_to_download_spacy_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """unstructured 0.27 downloads en_core_web_sm on first use; our route must make that unreachable."""
    import spacy.cli
    from unstructured.nlp import tokenize

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("attempted a download or network access")

    monkeypatch.setattr(tokenize, "_load_spacy_model", refuse)
    monkeypatch.setattr(tokenize, "_install_spacy_model", refuse)
    monkeypatch.setattr(spacy.cli, "download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    calls_before = offline_pipeline.cache_info()
    unique = uuid.uuid4().hex  # unstructured caches per text: make sure the pipeline really runs
    txt = tmp_path / "note.txt"
    txt.write_text(f"Offline parsing works {unique}. 离线解析正常。", encoding="utf-8")
    assert unique in load_file(txt)[0].page_content
    assert (
        "星河一号"
        in by_text(load_file(make_docx(tmp_path / "d.docx", f"星河一号 {unique} 说明")), unique).page_content
    )
    calls_after = offline_pipeline.cache_info()
    assert calls_after.hits + calls_after.misses > calls_before.hits + calls_before.misses
    assert tokenize._get_nlp is offline_pipeline
    assert offline_pipeline().lang == "xx" and offline_pipeline().pipe_names == ["sentencizer"]


def test_offline_route_is_idempotent_and_guards_against_a_changed_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from unstructured.nlp import tokenize

    install_offline_nlp()
    install_offline_nlp()
    assert tokenize._get_nlp is offline_pipeline
    monkeypatch.delattr(tokenize, "_get_nlp")
    with pytest.raises(KbqaError, match=r"unstructured==0\.27\.32"):
        install_offline_nlp()


# --- refusals ----------------------------------------------------------------------------------


def assert_one_line(error: pytest.ExceptionInfo[KbqaError], name: str) -> None:
    message = str(error.value)
    assert "\n" not in message and name in message


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(b"ID3")
    with pytest.raises(UnsupportedFormatError) as error:
        load_file(path)
    assert_one_line(error, "song.mp3")
    assert ".mp3" in str(error.value) and ".pdf" in str(error.value) and ".docx" in str(error.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="no such file") as error:
        load_file(tmp_path / "nowhere.pdf")
    assert_one_line(error, "nowhere.pdf")


def test_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(LoaderError, match="not a regular file"):
        load_file(tmp_path / "folder.md")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.docx").write_bytes(b"")
    with pytest.raises(LoaderError, match=r"empty\.docx: empty file"):
        load_file(tmp_path / "empty.docx")


def test_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("大" * 100, encoding="utf-8")
    with pytest.raises(LoaderError, match="larger than the 100-byte limit"):
        load_file(path, max_bytes=100)


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is no pdf\n", "PDF"),
        ("broken.docx", b"PK\x03\x04 truncated", "DOCX"),
        ("broken.pptx", b"not a zip at all", "PPTX"),
        ("broken.xlsx", b"\x00\x01\x02", "XLSX"),
    ],
)
def test_corrupt_files(tmp_path: Path, name: str, data: bytes, kind: str) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(LoaderError, match=f"corrupt or not a valid {kind} file") as error:
        load_file(tmp_path / name)
    assert_one_line(error, name)


def test_zip_that_is_not_a_docx(tmp_path: Path) -> None:
    path = tmp_path / "renamed.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "你好")
    with pytest.raises(LoaderError, match="corrupt or not a valid DOCX file"):
        load_file(path)


_MiB = 1 << 20


def _write_zip(source: Path, target: Path, member: str, tail_bytes: int) -> bytes:
    """`source`'s members deflated into `target`, with `tail_bytes` spaces streamed after
    `member` (a new member when `source` lacks it). Returns `member`'s bytes before the tail."""
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    head = members.pop(member, b"")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for name, data in members.items():
            out.writestr(name, data)
        info = zipfile.ZipInfo(member)
        info.compress_type = zipfile.ZIP_DEFLATED
        with out.open(info, "w") as stream:
            stream.write(head)
            for _ in range(tail_bytes // _MiB):
                stream.write(b" " * _MiB)
            stream.write(b" " * (tail_bytes % _MiB))
    return head


def padded_bomb(source: Path, target: Path, padding: int) -> Path:
    """An honest bomb: `source` plus a member of `padding` blank bytes, declared as such."""
    _write_zip(source, target, "customXml/padding.xml", padding)
    return target


def understated_bomb(source: Path, target: Path, member: str, inflated: int) -> Path:
    """`member` inflates to `inflated` more bytes than it declares: its central-directory and
    local-header size and CRC are those of the real XML before the tail, so a reader that
    stops at the declared size sees a valid, small file."""
    real = _write_zip(source, target, member, inflated)
    data = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as archive:
        local, entry = archive.getinfo(member).header_offset, archive.start_dir
    struct.pack_into("<I", data, local + 14, zlib.crc32(real))  # local header: CRC ...
    struct.pack_into("<I", data, local + 22, len(real))  # ... and uncompressed size
    while data[entry:entry + 4] == b"PK\x01\x02":  # central directory entries
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, entry + 28)
        if data[entry + 46:entry + 46 + name_len] == member.encode():
            struct.pack_into("<I", data, entry + 16, zlib.crc32(real))
            struct.pack_into("<I", data, entry + 24, len(real))
        entry += 46 + name_len + extra_len + comment_len
    target.write_bytes(data)
    return target


# Loads each (path, load_file keyword arguments) in a fresh process: the outcome, the peak of
# Python-traced memory (zlib's buffers included) during load_file, and how far the process's
# peak resident memory rose past what it had after the imports (KiB).
_MEASURE_LOADS = """
import json, resource, sys, tracemalloc
from kbqa.errors import LoaderError
from kbqa.ingest import load_file
results = []
for path, options in json.loads(sys.argv[1]):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        load_file(path, **options)
        error = None
    except LoaderError as exc:
        error = str(exc)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    results.append({"error": error, "peak": peak, "rss_kib": rss})
print(json.dumps(results))
"""


def measure_loads(*loads: tuple[Path, int | None | dict]) -> list[dict]:
    """(path, max_unzipped_bytes, None for the default, or a dict of load_file options)."""
    def options(limit: int | None | dict) -> dict:
        if isinstance(limit, dict):
            return limit
        return {} if limit is None else {"max_unzipped_bytes": limit}

    argument = json.dumps([(str(path), options(limit)) for path, limit in loads])
    result = subprocess.run([sys.executable, "-c", _MEASURE_LOADS, argument], capture_output=True,
                            text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_zip_bomb_guard_boundary_and_memory(tmp_path: Path) -> None:
    """A real bomb (a docx plus 256 MiB of blanks, ~1000:1) passes the size limit at exactly its
    unpacked size and is refused one byte below it, having read no more memory than the file's
    own size (the ratio limit, tested below, is off here)."""
    bomb = padded_bomb(make_docx(tmp_path / "src.docx", MARKER), tmp_path / "bomb.docx", 256 * _MiB)
    with zipfile.ZipFile(bomb) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    compressed = bomb.stat().st_size
    assert unpacked > 256 * _MiB > 500 * compressed  # it is a bomb
    assert MARKER in texts(load_file(bomb, max_unzipped_bytes=unpacked, max_unzip_ratio=None))
    with pytest.raises(LoaderError, match=rf"unpacks to {unpacked} bytes, over the "
                                          rf"{unpacked - 1}-byte limit \(refused as a possible zip bomb"):
        load_file(bomb, max_unzipped_bytes=unpacked - 1, max_unzip_ratio=None)
    (refused,) = measure_loads((bomb, unpacked - 1))
    assert "zip bomb" in refused["error"]
    assert refused["peak"] < compressed


def test_zip_ratio_limit_boundary_and_the_default_limits_memory(tmp_path: Path) -> None:
    """The ratio limit: a member declaring exactly the limit's ratio loads, one step over is
    refused by its declared sizes alone. Under the default limits a 200 MiB bomb (below the
    256 MiB size limit, ~1000:1) is refused without inflating anything: memory stays within the
    file's own size. The default size limit sits below the old 1 GiB, which let a 900 MB bomb
    through to the parser (it raised a server's RSS by 1.7 GB)."""
    from kbqa.ingest.loaders import DEFAULT_MAX_UNZIP_RATIO, DEFAULT_MAX_UNZIPPED_BYTES

    assert DEFAULT_MAX_UNZIPPED_BYTES == 256 * _MiB and DEFAULT_MAX_UNZIP_RATIO == 100
    padding = "customXml/padding.xml"
    bomb = padded_bomb(make_docx(tmp_path / "src.docx", MARKER), tmp_path / "bomb.docx", 200 * _MiB)
    with zipfile.ZipFile(bomb) as archive:
        info = archive.getinfo(padding)
    ratio = -(-info.file_size // info.compress_size)  # the smallest whole ratio it fits under
    assert ratio > DEFAULT_MAX_UNZIP_RATIO
    assert MARKER in texts(load_file(bomb, max_unzip_ratio=ratio))
    with pytest.raises(LoaderError, match=rf"{padding} declares {info.file_size} bytes from "
                                          rf"{info.compress_size}, over the {ratio - 1}:1 "
                                          r"compression limit \(refused as a possible zip bomb"):
        load_file(bomb, max_unzip_ratio=ratio - 1)
    compressed = bomb.stat().st_size
    (refused,) = measure_loads((bomb, None))
    assert "100:1 compression limit" in refused["error"]
    assert refused["peak"] < compressed and refused["rss_kib"] < compressed // 1024 + 16 * 1024
    normal = make_docx(tmp_path / "normal.docx", MARKER)  # a real docx is far under both
    assert MARKER in texts(load_file(normal))


def _inflated_size(path: Path, member: str) -> int:
    """What `member`'s deflate stream really unpacks to, inflated here piece by piece."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    with path.open("rb") as raw:
        raw.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", raw.read(4))
        raw.seek(name_len + extra_len, 1)
        inflate, left, size = zlib.decompressobj(-15), info.compress_size, 0
        while not inflate.eof and (left or inflate.unconsumed_tail):
            data = inflate.unconsumed_tail or raw.read(min(left, 1 << 16))
            left -= 0 if inflate.unconsumed_tail else len(data)
            size += len(inflate.decompress(data, 1 << 20))
    return size


@pytest.mark.parametrize(("make", "suffix", "member"), [
    (make_docx, ".docx", "word/document.xml"),
    (make_xlsx, ".xlsx", "xl/worksheets/sheet1.xml"),
])
def test_a_member_that_unpacks_past_its_declared_size_is_refused(
        tmp_path: Path, make: Callable[[Path], Path], suffix: str, member: str) -> None:
    """A ~300 KB file whose main XML declares its real few KB but inflates 256 MiB past them.
    A reader that stops at the declared size gets the real XML with a matching CRC, so it
    would load; but zipfile's read() inflates the whole stream first (before the guard
    inflated members itself, loading this docx peaked at 735 MB traced and 1 GB RSS). The guard
    refuses it, under the default limit and under any other, within the file's own size."""
    bomb = understated_bomb(make(tmp_path / f"src{suffix}"), tmp_path / f"bomb{suffix}", member,
                            256 * _MiB)
    compressed = bomb.stat().st_size
    with zipfile.ZipFile(bomb) as archive, archive.open(member) as stream:
        declared = archive.getinfo(member).file_size
        seen = b"".join(iter(lambda: stream.read(4096), b""))  # CRC checked at the end
    assert len(seen) == declared < 64 * 1024 and seen.rstrip().endswith(b">")
    assert _inflated_size(bomb, member) > 256 * _MiB > 500 * compressed  # it is a bomb
    for outcome in measure_loads((bomb, None), (bomb, 1 << 40)):
        assert outcome["error"], outcome
        assert f"{member} unpacks to more than the {declared} bytes it declares" in outcome["error"]
        assert outcome["peak"] < compressed


def test_binary_file_named_txt(tmp_path: Path) -> None:
    (tmp_path / "photo.txt").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(LoaderError, match=r"photo\.txt: looks like a binary file"):
        load_file(tmp_path / "photo.txt")


def _png(path: Path) -> Path:
    render_page(["星河一号"], dpi=72, width_inches=2).save(path, format="PNG")
    return path


@pytest.mark.parametrize(("name", "make", "named"), [
    ("photo.txt", _png, r"image/png \(a \.png file\)"),
    ("scan.md", lambda p: render_page(["星河"], dpi=72, width_inches=2).save(p, format="JPEG"),
     r"image/jpeg \(a \.jpg file\)"),
    ("report.csv", lambda p: make_pdf(p, [[MARKER]]), r"application/pdf \(a \.pdf file\)"),
    ("page.html", lambda p: make_docx(p),
     r"application/vnd\.openxmlformats-officedocument\.wordprocessingml\.document \(a \.docx file\)"),
])
def test_other_formats_named_as_text_are_refused_by_their_content(
        tmp_path: Path, name: str, make: Callable[[Path], object], named: str) -> None:
    """A PNG named .txt was indexed as one chunk of mojibake (issue 18): text formats are
    sniffed, and the refusal says what the file really is."""
    make(tmp_path / name)
    with pytest.raises(LoaderError, match=rf"{re.escape(name)}: the content is {named}, not text; "
                                          r"rename it") as error:
        load_file(tmp_path / name)
    assert_one_line(error, name)


@pytest.mark.parametrize("text", ["BMW是一家德国汽车公司。", "ID3标签写在MP3文件的开头。", "%PDF-1.7 是一种文件格式。"])
def test_text_that_starts_like_a_file_signature_is_still_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")
    assert texts(load_file(path)) == [text]


def test_cli_ingest_refuses_a_png_named_txt(tmp_path: Path) -> None:
    """`kbqa ingest` reports the file as failed with the loader's message; nothing is indexed."""
    _png(tmp_path / "photo.txt")
    env = {**os.environ, "KBQA_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "kbqa.cli", "ingest", str(tmp_path / "photo.txt")],
                            env=env, capture_output=True, text=True, timeout=300, check=False,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 1, result.stderr
    assert "failed" in result.stdout
    assert "photo.txt: the content is image/png (a .png file), not text" in result.stdout
    assert "0 chunks in total" in result.stdout


def test_scanned_pdf_without_text(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    pdf = canvas.Canvas(str(path))
    pdf.rect(100, 100, 300, 400, fill=1)  # an "image" of a page: drawing, no text
    pdf.showPage()
    pdf.save()
    with pytest.raises(LoaderError, match=r"scan\.pdf: no extractable text"):
        load_file(path)


def test_whitespace_only_text_file(tmp_path: Path) -> None:
    (tmp_path / "blank.md").write_text(" \n\n\t\n", encoding="utf-8")
    with pytest.raises(LoaderError, match="no extractable text"):
        load_file(tmp_path / "blank.md")
