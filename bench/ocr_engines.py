"""OCR engines on generated Chinese scans: character error rate and pages/s.

Pages are CMRC 2018 sentences (bench/zh_corpus.py) rendered with Noto Sans CJK SC at 12 pt on an
A4-wide page (tests/doc_samples.py), about 20 lines each: clean at 300 dpi, and "noisy" (rotated
by ±3°, blurred, grey paper with Gaussian noise and dust, JPEG quality 60) at 300 dpi; speed is
measured on clean pages at --speed-dpi. CER = Levenshtein distance / reference length, whitespace
removed on both sides, over all pages together. Engines:

  * rapidocr-onnxruntime 1.4.4 (PP-OCRv4 mobile det/rec in the wheel; Langchain-Chatchat's)
  * rapidocr 3.10 (PP-OCRv6 small det/rec in the wheel; kbqa's ``ocr`` extra), default settings
  * tesseract 5 (Debian tesseract-ocr + tesseract-ocr-chi-sim) through pytesseract

The engines that are not kbqa's come from a side folder, so they do not clash with its OpenCV:

    apt-get install tesseract-ocr tesseract-ocr-chi-sim
    pip install --target /tmp/ocr-side --no-deps rapidocr-onnxruntime==1.4.4 pytesseract
    PYTHONPATH=/tmp/ocr-side python bench/ocr_engines.py --pages 3

Writes JSON to bench/results/ocr_engines.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rapidfuzz.distance import Levenshtein
from zh_corpus import sentences

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_facts import with_machine

from tests.doc_samples import degrade, render_page

Engine = Callable[[object], str]


def _rapidocr_onnxruntime() -> Engine:
    import numpy as np
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()

    def run(image: object) -> str:
        result, _ = engine(np.asarray(image.convert("RGB")))
        return "\n".join(text for _, text, _ in result or [])

    return run


def _rapidocr3() -> Engine:
    import numpy as np
    from rapidocr import RapidOCR

    engine = RapidOCR()

    def run(image: object) -> str:
        return "\n".join(engine(np.asarray(image.convert("RGB"))).txts or [])

    return run


def _tesseract() -> Engine:
    import pytesseract

    return lambda image: pytesseract.image_to_string(image, lang="chi_sim")


ENGINES = {"rapidocr-onnxruntime": _rapidocr_onnxruntime, "rapidocr3": _rapidocr3,
           "tesseract": _tesseract}


def _pages(count: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    pool = sentences()
    return [rng.sample(pool, 12) for _ in range(count)]


def _squash(text: str) -> str:
    return "".join(text.split())


def _cer(engine: Engine, images: list, references: list[str]) -> tuple[float, float, float]:
    """(CER over all pages, wall seconds per page, CPU seconds per page over all threads;
    tesseract runs as a child process, counted through its CPU times)."""
    errors = total = 0
    started, cpu = time.perf_counter(), _cpu()
    for image, reference in zip(images, references, strict=True):
        got = _squash(engine(image))
        errors += Levenshtein.distance(reference, got)
        total += len(reference)
    pages = len(images)
    return errors / total, (time.perf_counter() - started) / pages, (_cpu() - cpu) / pages


def _cpu() -> float:
    import os

    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--speed-dpi", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "ocr_engines.json")
    args = parser.parse_args()
    pages = _pages(args.pages, args.seed)
    references = [_squash("".join(lines)) for lines in pages]
    clean = [render_page(lines, dpi=300) for lines in pages]
    rng = random.Random(args.seed)
    noisy = [degrade(page, seed=n, angle=rng.choice((-3.0, 3.0))) for n, page in enumerate(clean)]
    fast = [render_page(lines, dpi=args.speed_dpi) for lines in pages]
    rows = []
    for name in args.engines:
        try:
            started = time.perf_counter()
            engine = ENGINES[name]()
            engine(fast[0])  # warm-up: sessions and first-call allocations
            load_s = time.perf_counter() - started
        except ImportError as exc:
            print(f"{name}: not installed ({exc})")
            continue
        cer_clean, _, _ = _cer(engine, clean, references)
        cer_noisy, _, _ = _cer(engine, noisy, references)
        cer_fast, seconds, cpu = _cer(engine, fast, references)
        row = {"engine": name, "cer_clean_300dpi": cer_clean, "cer_noisy_300dpi": cer_noisy,
               f"cer_clean_{args.speed_dpi}dpi": cer_fast,
               f"pages_per_s_{args.speed_dpi}dpi": 1 / seconds,
               f"cpu_s_per_page_{args.speed_dpi}dpi": cpu, "load_and_first_page_s": load_s}
        rows.append(row)
        print(f"{name:22s} CER clean {cer_clean:.2%}  noisy {cer_noisy:.2%}  "
              f"{args.speed_dpi} dpi: CER {cer_fast:.2%}, {1 / seconds:.2f} pages/s, "
              f"{cpu:.2f} CPU s a page  "
              f"(load + first page {load_s:.1f} s)")
    payload = with_machine({"pages": args.pages, "chars": sum(map(len, references)),
                            "speed_dpi": args.speed_dpi, "results": rows})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
