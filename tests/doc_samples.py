"""Documents as companies have them, generated at test time: scanned pages (Chinese text rendered
with a CJK font, with noise and rotation), image-only PDFs, and reportlab PDFs with tables and two
columns. Used by the loader tests and by bench/documents.py; nothing binary is committed."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Debian's fonts-noto-cjk (installed by .ci/run with chromium)
CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
_A4_INCHES = (8.27, 11.69)
_MARGIN_INCHES = 0.8

SCAN_TEXT = [
    "星河智能科技有限公司员工手册",
    "第一条 员工入职满一年后，每年享有十天带薪年假。",
    "第二条 年假须提前三个工作日在系统中申请，由直属主管审批。",
    "第三条 报销须在费用发生后三十天内提交，逾期不予受理。",
    "第四条 售后服务电话为400-123-4567，工作日9:00至18:00接听。",
]


def render_page(lines: list[str], *, dpi: int = 300, point_size: float = 12.0,
                width_inches: float | None = None) -> Image.Image:
    """A white page (A4 wide unless told) with `lines` in black, wrapped to the text width."""
    if not CJK_FONT.is_file():
        raise FileNotFoundError(f"{CJK_FONT} is missing: apt-get install fonts-noto-cjk")
    font = ImageFont.truetype(str(CJK_FONT), round(point_size / 72 * dpi), index=2)  # SC face
    width = round((width_inches or _A4_INCHES[0]) * dpi)
    margin = round(_MARGIN_INCHES * dpi)
    wrapped = [piece for line in lines for piece in _wrap(line, font, width - 2 * margin)]
    line_height = round(point_size / 72 * dpi * 1.6)
    height = max(round(_A4_INCHES[1] * dpi) if width_inches is None else 0,
                 2 * margin + line_height * len(wrapped))
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    for row, text in enumerate(wrapped):
        draw.text((margin, margin + row * line_height), text, font=font, fill=0)
    return page


def _wrap(line: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    pieces, current = [], ""
    for char in line:
        if current and font.getlength(current + char) > width:
            pieces.append(current)
            current = ""
        current += char
    return [*pieces, current] if current else pieces


def degrade(page: Image.Image, *, seed: int = 0, angle: float = 3.0, noise: float = 18.0,
            jpeg_quality: int = 60) -> Image.Image:
    """A page as a cheap scanner gives it: rotated by `angle` degrees, blurred, grey background
    with Gaussian noise and dust specks, then JPEG-compressed."""
    rng = random.Random(seed)
    rotated = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    blurred = rotated.filter(ImageFilter.GaussianBlur(radius=0.6))
    import numpy as np

    pixels = np.asarray(blurred, dtype=np.float32) * 0.85 + 20  # grey paper, weaker ink
    noisy = pixels + np.random.default_rng(seed).normal(0, noise, pixels.shape)
    for _ in range(noisy.size // 4000):  # dust
        y, x = rng.randrange(noisy.shape[0]), rng.randrange(noisy.shape[1])
        noisy[y:y + 2, x:x + 2] = 40
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=jpeg_quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def image_pdf(path: Path, pages: list[Image.Image], *, dpi: int) -> Path:
    """A PDF whose pages are only these images (what a scanner writes): no text layer."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path))
    for image in pages:
        size = (image.width * 72 / dpi, image.height * 72 / dpi)
        pdf.setPageSize(size)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=80)
        pdf.drawImage(ImageReader(io.BytesIO(buffer.getvalue())), 0, 0, *size)
        pdf.showPage()
    pdf.save()
    return path


# --- tables and two-column PDFs (reportlab, its built-in Chinese CID font) -----------------------

PRODUCT_TABLE = [
    ["型号", "最大吸力", "续航", "价格"],
    ["星河扫地机器人R1", "2500Pa", "120分钟", "1999元"],
    ["星河扫地机器人R2", "4000Pa", "150分钟", "2999元"],
    ["星河扫地机器人R3", "6000Pa", "180分钟", "3999元"],
]


def _cid_font() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    return "STSong-Light"


def table_pdf(path: Path, rows: list[list[str]], *, title: str = "产品参数表") -> Path:
    """One page: a title, a paragraph, a ruled table of `rows` (first row the header)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import (
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    font = _cid_font()
    style = ParagraphStyle("zh", fontName=font, fontSize=11, leading=16)
    table = Table(rows)
    table.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), font),
                               ("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))
    SimpleDocTemplate(str(path), pagesize=A4).build(
        [Paragraph(title, style), Paragraph("下表列出各型号的主要参数。", style), Spacer(1, 12), table])
    return path


def two_column_pdf(path: Path, left: list[str], right: list[str], *, pages: int = 2,
                   header: str = "星河科技 内部资料", footer: str = "第{page}页",
                   interleave: bool = False) -> Path:
    """`pages` pages, each with a running header and footer and two columns of lines (each line
    ending in "（page）"). The content stream holds the left column, then the right one; with
    `interleave`, row by row across the columns, as many producers write it, so a reader that
    follows the stream mixes the columns."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    font = _cid_font()
    pdf = canvas.Canvas(str(path), pagesize=A4)
    width, height = A4
    for page in range(1, pages + 1):
        pdf.setFont(font, 9)
        pdf.drawString(72, height - 40, header)
        pdf.drawString(width / 2 - 20, 30, footer.format(page=page))
        pdf.setFont(font, 11)
        cells = [(column, row, line) for column, lines in ((72, left), (width / 2 + 10, right))
                 for row, line in enumerate(lines)]
        if interleave:
            cells.sort(key=lambda cell: (cell[1], cell[0]))
        for column, row, line in cells:
            pdf.drawString(column, height - 90 - 18 * row, f"{line}（{page}）")
        pdf.showPage()
    pdf.save()
    return path
