"""Offline OCR of scanned pages and photos: RapidOCR with the PP-OCRv6 models its wheel ships.

Chosen over rapidocr-onnxruntime 1.4 and Tesseract on character error rate of generated Chinese
scans (docs/benchmarks.md §Documents). It is the optional extra ``kbqa[ocr]`` (onnxruntime and
OpenCV are large); without it, a file that needs OCR is refused with the install command.
The models are loaded once per process, from the package folder: nothing is downloaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from kbqa.errors import LoaderError

if TYPE_CHECKING:
    from PIL.Image import Image

INSTALL_HINT = "OCR is not installed: pip install 'kbqa[ocr]'"
# RapidOCR scales a page down to this longest side first (~140 dpi for A4): less CPU a page than
# its default of 2,000 px at the same error rate on 12-pt Chinese (docs/benchmarks.md §11).
_MAX_SIDE = 1600
# A line wraps on when it ends within this share of the text block's width from its right edge,
# in a block at least this share of the image wide.
_WRAP_SLACK = 0.05
_WRAP_MIN_WIDTH = 0.5
_lock = threading.Lock()  # one onnxruntime session pair, used by one page at a time

# called with (pages done, pages in all) after each OCR'd page
PageProgress = Callable[[int, int], None]


# rapidocr 3 imports without its inference engine and fails only on the first page
_OCR_PACKAGES = ("rapidocr", "onnxruntime")


def ocr_available() -> bool:
    """Whether the optional OCR extra is installed, engine included (without loading models)."""
    import importlib.util

    return all(importlib.util.find_spec(package) is not None for package in _OCR_PACKAGES)


@lru_cache(maxsize=1)
def _engine() -> Any:
    """The RapidOCR pipeline with its bundled PP-OCRv6 models (seconds to load: once)."""
    try:
        from rapidocr import RapidOCR
    except ImportError as exc:  # not installed, or installed without a library it needs
        raise LoaderError(f"{INSTALL_HINT} (import failed: {exc})") from exc
    # RapidOCR logs each model path at INFO through its own handler.
    engine = RapidOCR(params={"Global.log_level": "error", "Global.max_side_len": _MAX_SIDE})
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return engine


def ocr_image(image: Image, name: str) -> str:
    """The text of one page image, one detected line per line, top to bottom.

    ``name`` names the file in error messages.
    """
    import numpy as np

    engine = _engine()
    pixels = np.asarray(image.convert("RGB"))
    try:
        with _lock:
            result = engine(pixels)
    except Exception as exc:  # onnxruntime and OpenCV raise many types on odd images
        detail = " ".join(str(exc).split())[:200]
        raise LoaderError(f"{name}: OCR failed ({type(exc).__name__}: {detail})") from exc
    texts = [text.strip() for text in (result.txts or ())]
    if not texts:
        return ""
    boxes = [(float(min(x for x, _ in box)), float(max(x for x, _ in box))) for box in result.boxes]
    return _paragraphs(texts, boxes, image.width)


def _paragraphs(texts: list[str], boxes: list[tuple[float, float]], width: int) -> str:
    """Lines joined into paragraphs, so a word cut by a wrap is whole again: a line that reaches
    the right edge of a text block at least half the image wide wraps into the next one (joined
    without a break, or with a space between Latin letters and digits); other lines end theirs."""
    left = min(x0 for x0, _ in boxes)
    edge = max(x1 for _, x1 in boxes)
    block = edge - left
    out = ""
    for index, text in enumerate(texts):
        if not text:
            continue
        if out:
            wraps = block >= _WRAP_MIN_WIDTH * width and boxes[index - 1][1] >= edge - _WRAP_SLACK * block
            out += (" " if out[-1].isascii() and text[0].isascii() else "") if wraps else "\n"
        out += text
    return out
