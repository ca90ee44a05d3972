"""Offline OCR of scanned pages and photos: RapidOCR with the PP-OCRv6 models its wheel ships.

Chosen over rapidocr-onnxruntime 1.4 and Tesseract on character error rate of generated Chinese
scans (docs/benchmarks.md §Documents). It is the optional extra ``kbqa[ocr]`` (onnxruntime and
OpenCV are large); without it, a file that needs OCR is refused with the install command.
The models are loaded from the package folder, nothing is downloaded; a small pool of engines
(one onnxruntime session set each, each used by one page at a time) lets pages run side by side.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from kbqa.errors import LoaderError

if TYPE_CHECKING:
    from PIL.Image import Image

INSTALL_HINT = "OCR is not installed: pip install 'kbqa[ocr]'"
# A line wraps on when it ends within this share of the text block's width from its right edge,
# in a block at least this share of the image wide.
_WRAP_SLACK = 0.05
_WRAP_MIN_WIDTH = 0.5

# called with (pages done, pages in all) after each OCR'd page
PageProgress = Callable[[int, int], None]

T = TypeVar("T")

# rapidocr 3 imports without its inference engine and fails only on the first page
_OCR_PACKAGES = ("rapidocr", "onnxruntime")


@dataclass(frozen=True)
class OcrSettings:
    """How RapidOCR runs; the defaults are the fastest measured that keep the error-rate targets
    (docs/benchmarks.md §11, bench/ocr_settings.py)."""

    # Global.max_side_len: the page is scaled down to this longest side (lines are cut from it)
    max_side: int = 1600
    # the detector's input, longest side; None: RapidOCR's own (shortest side at least 736 px)
    det_side: int | None = 960
    # the 0°/180° line classifier: scans come upright, and with it ±3° pages read worse
    use_cls: bool = False
    # lines recognised per onnxruntime call: a batch is padded to its widest line
    rec_batch: int = 1
    # onnxruntime intra-op threads of each engine: one engine a core spends less CPU a page
    threads: int = 1
    # engines, so pages OCR'd at once
    workers: int = 2
    # the page is scaled to this share of its width first: recognition time grows with a line's
    # width; at half width repeated digits and letters ran together ("100" read as "10")
    squeeze: float = 0.7

    def params(self) -> dict[str, Any]:
        """RapidOCR's parameters for these settings."""
        params: dict[str, Any] = {
            "Global.log_level": "error", "Global.max_side_len": self.max_side,
            "Global.use_cls": self.use_cls, "Rec.rec_batch_num": self.rec_batch,
            "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        if self.det_side is not None:
            params |= {"Det.limit_type": "max", "Det.limit_side_len": self.det_side}
        return params


SETTINGS = OcrSettings(workers=max(1, min(2, os.cpu_count() or 1)))


def ocr_available() -> bool:
    """Whether the optional OCR extra is installed, engine included (without loading models)."""
    import importlib.util

    return all(importlib.util.find_spec(package) is not None for package in _OCR_PACKAGES)


def _new_engine(settings: OcrSettings) -> Any:
    """A RapidOCR pipeline with its bundled PP-OCRv6 models (seconds to load)."""
    try:
        from rapidocr import RapidOCR
    except ImportError as exc:  # not installed, or installed without a library it needs
        raise LoaderError(f"{INSTALL_HINT} (import failed: {exc})") from exc
    # RapidOCR logs each model path at INFO through its own handler.
    engine = RapidOCR(params=settings.params())
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return engine


class _EnginePool:
    """Up to ``size`` engines, made when first needed; each is lent to one page at a time."""

    def __init__(self, settings: OcrSettings) -> None:
        self.settings = settings
        self._free: queue.LifoQueue[Any] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()

    @contextmanager
    def engine(self) -> Iterator[Any]:
        """An engine no other page is using, until the block ends."""
        with self._lock:
            make = self._free.empty() and self._made < self.settings.workers
            if make:
                self._made += 1
        if make:
            try:
                engine = _new_engine(self.settings)
            except BaseException:
                with self._lock:
                    self._made -= 1
                raise
        else:
            engine = self._free.get()
        try:
            yield engine
        finally:
            self._free.put(engine)


@lru_cache(maxsize=1)
def _pool(settings: OcrSettings) -> _EnginePool:
    """The process's engines for these settings (models load once per engine)."""
    return _EnginePool(settings)


def ocr_image(image: Image, name: str) -> str:
    """The text of one page image, one detected line per line, top to bottom.

    ``name`` names the file in error messages.
    """
    import numpy as np

    settings = SETTINGS
    pool = _pool(settings)
    if settings.squeeze != 1.0:
        image = image.resize((max(1, round(image.width * settings.squeeze)), image.height))
    pixels = np.asarray(image.convert("RGB"))
    try:
        with pool.engine() as engine:
            result = engine(pixels)
    except LoaderError:
        raise
    except Exception as exc:  # onnxruntime and OpenCV raise many types on odd images
        detail = " ".join(str(exc).split())[:200]
        raise LoaderError(f"{name}: OCR failed ({type(exc).__name__}: {detail})") from exc
    texts = [text.strip() for text in (result.txts or ())]
    if not texts:
        return ""
    boxes = [(float(min(x for x, _ in box)), float(max(x for x, _ in box))) for box in result.boxes]
    return _paragraphs(texts, boxes, image.width)


@dataclass(frozen=True)
class Ready(Generic[T]):
    """A job's result known already (a page with a text layer): ``in_order`` passes it on in
    its place without a thread."""

    value: T


def in_order(jobs: Iterable[Callable[[], T] | Ready[T]], workers: int | None = None) -> Iterator[T]:
    """Each job's result, in the jobs' order, with up to ``workers`` jobs running at once.

    The jobs are taken from ``jobs`` in the caller's thread (so whatever builds a job, such as
    rendering a PDF page, stays there) and at most ``workers`` are held ahead of the one awaited.
    Threads start only when a job needs one.
    """
    workers = SETTINGS.workers if workers is None else workers
    window: deque[Future[T]] = deque()
    with ExitStack() as stack:
        executor: ThreadPoolExecutor | None = None
        try:
            for job in jobs:
                if isinstance(job, Ready):
                    if not window:
                        yield job.value
                        continue
                    future: Future[T] = Future()
                    future.set_result(job.value)
                elif workers <= 1:
                    future = Future()
                    future.set_result(job())
                else:
                    if executor is None:
                        executor = stack.enter_context(
                            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kbqa-ocr"))
                    future = executor.submit(job)
                window.append(future)
                if len(window) >= max(workers, 1):
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for pending in window:
                pending.cancel()


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
