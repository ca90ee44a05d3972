"""kbqa's OCR (RapidOCR 3.10, the PP-OCRv6 small models in its wheel) under different settings:
character error rate, CPU seconds a page, pages/s, and where the time goes (detection, line
classification, recognition), all through kbqa's loader (``load_file``), engine pool included.

Pages are CMRC 2018 sentences (bench/zh_corpus.py) rendered with Noto Sans CJK SC at 12 pt on A4
(tests/doc_samples.py), saved as one multi-page TIFF per set: clean at 300 dpi, "noisy" at 300 dpi
(±3°, blur, grey paper, noise, dust, JPEG 60), clean at each --speed-dpi, and "codes": 10-pt lines
of order numbers, phone numbers, URLs and model names (Latin letters and digits, where a squeezed
line loses repeated characters) at 200 dpi. CER = Levenshtein distance / reference characters,
whitespace removed. CPU seconds count all threads of the process,
a figure that holds when other processes share the cores; wall pages/s does not, so the settings
are run back to back and each is timed --repeats times (best kept).

    python bench/ocr_settings.py --pages 4
    python bench/ocr_settings.py --settings kbqa --pages 4

Writes JSON to bench/results/ocr_settings.json (or --json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein
from zh_corpus import sentences

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_facts import with_machine

from kbqa.ingest import load_file, ocr
from kbqa.ingest.ocr import OcrSettings
from tests.doc_samples import degrade, render_page

_BEFORE = OcrSettings(max_side=1600, det_side=None, use_cls=True, rec_batch=6, threads=-1, squeeze=1.0,
                      workers=1)
_ONE = dataclasses.replace(_BEFORE, threads=1)
_DET = dataclasses.replace(_ONE, det_side=960)
_NOCLS = dataclasses.replace(_DET, use_cls=False)
_BATCH1 = dataclasses.replace(_NOCLS, rec_batch=1)
_TWO = dataclasses.replace(_BATCH1, workers=2)
# Each variant changes one thing from the one above it (or the one it names); "kbqa" is kbqa's
# default. threads -1 is onnxruntime's own choice (one thread a core).
VARIANTS: dict[str, OcrSettings] = {
    "before: max side 1600, det as RapidOCR, cls on, rec batch 6, ORT threads auto, 1 engine": _BEFORE,
    "+ 1 ORT thread": _ONE,
    "before + 2 ORT threads": dataclasses.replace(_BEFORE, threads=2),
    "+ det longest side 960": _DET,
    "+ no cls": _NOCLS,
    "+ rec batch 1": _BATCH1,
    "no cls + rec batch 12": dataclasses.replace(_NOCLS, rec_batch=12),
    "rec batch 1 + max side 1280": dataclasses.replace(_BATCH1, max_side=1280),
    "+ 2 engines": _TWO,
    "+ 2 engines, width x0.7": dataclasses.replace(_TWO, squeeze=0.7),
    "+ 2 engines, width x0.5": dataclasses.replace(_TWO, squeeze=0.5),
    "kbqa": ocr.SETTINGS,
}


def _codes(rng: random.Random, lines: int) -> list[str]:
    """Lines of Latin letters and digits such as a product sheet or an invoice has."""
    out = []
    for _ in range(lines):
        digits = "".join(rng.choice("0123456789") for _ in range(12))
        model = f"R{rng.randrange(1, 10)} Pro"
        out.append(f"订单号{digits}，电话400-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}，"
                   f"型号{model}，吸力{rng.randrange(20, 80)}00Pa，电池{rng.randrange(30, 70)}00mAh，"
                   f"网址www.xinghe-robot.com/support/{rng.randrange(10, 99)}，"
                   f"日期2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}")
    return out


def _tiff(path: Path, images: list) -> Path:
    images[0].save(path, save_all=True, append_images=images[1:], compression="tiff_deflate")
    return path


def _squash(text: str) -> str:
    return "".join(text.split())


def _timed_engine(steps: dict[str, float]) -> Any:
    """kbqa's engine factory, with each call's per-step seconds added to ``steps``."""
    make = ocr._new_engine

    def new(settings: OcrSettings) -> Any:
        engine = make(settings)

        def run(pixels: Any) -> Any:
            result = engine(pixels)
            for step, seconds in zip(("det", "cls", "rec"), result.elapse_list or (), strict=False):
                steps[step] += seconds or 0.0
            return result

        return run

    return new


def measure(settings: OcrSettings, sets: dict[str, Path], references: dict[str, list[str]],
            repeats: int) -> dict:
    """CER of each set, and CPU s and wall pages/s of the speed sets (best of ``repeats``)."""
    ocr.SETTINGS = settings
    ocr._pool.cache_clear()
    steps = {"det": 0.0, "cls": 0.0, "rec": 0.0}
    ocr._new_engine = _timed_engine(steps)
    load_file(sets["warm"])  # every engine loads its models: not timed
    row: dict[str, Any] = {"settings": dataclasses.asdict(settings),
                           "load_average_before": os.getloadavg()[0]}
    for name, path in sets.items():
        if name == "warm":
            continue
        best_wall = best_cpu = float("inf")
        for _ in range(repeats if name.startswith("speed") else 1):
            for step in steps:
                steps[step] = 0.0
            started, cpu = time.perf_counter(), time.process_time()
            docs = load_file(path)
            best_wall = min(best_wall, time.perf_counter() - started)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        expected = references.get(name, references["text"])
        errors = sum(Levenshtein.distance(ref, _squash(doc.page_content))
                     for ref, doc in zip(expected, docs, strict=True))
        pages = len(docs)
        row[name] = {"cer": errors / sum(map(len, expected)), "pages_per_s": pages / best_wall,
                     "cpu_s_per_page": best_cpu / pages,
                     "step_s_per_page": {k: v / pages for k, v in steps.items()}}
    row["load_average_after"] = os.getloadavg()[0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(VARIANTS),
                        help="names of VARIANTS, or a prefix of one")
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--speed-dpi", type=int, nargs="+", default=[200, 150])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "ocr_settings.json")
    args = parser.parse_args()
    chosen = {name: settings for name, settings in VARIANTS.items()
              if any(name.startswith(wanted) for wanted in args.settings)}
    rng = random.Random(args.seed)
    pool = sentences()
    texts = [rng.sample(pool, 12) for _ in range(args.pages)]
    references = [_squash("".join(lines)) for lines in texts]
    clean = [render_page(lines, dpi=300) for lines in texts]
    noisy = [degrade(page, seed=n, angle=rng.choice((-3.0, 3.0))) for n, page in enumerate(clean)]
    codes = [_codes(rng, 8) for _ in range(args.pages)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = {"warm": _tiff(work / "warm.tiff", [render_page(texts[0], dpi=150)] * 2),
                "clean_300dpi": _tiff(work / "clean.tiff", clean),
                "noisy_300dpi": _tiff(work / "noisy.tiff", noisy),
                "codes_200dpi": _tiff(work / "codes.tiff", [render_page(lines, dpi=200, point_size=10)
                                                            for lines in codes])}
        for dpi in args.speed_dpi:
            sets[f"speed_{dpi}dpi"] = _tiff(work / f"s{dpi}.tiff",
                                            [render_page(lines, dpi=dpi) for lines in texts])
        for name, settings in chosen.items():
            row = {"name": name, **measure(settings, sets, {
                "text": references, "codes_200dpi": [_squash("".join(lines)) for lines in codes]},
                args.repeats)}
            rows.append(row)
            speeds = "  ".join(
                f"{key[6:]}: CER {row[key]['cer']:.2%} {row[key]['cpu_s_per_page']:.2f} CPU s/page "
                f"{row[key]['pages_per_s']:.2f} pages/s (det {row[key]['step_s_per_page']['det']:.2f}"
                f" cls {row[key]['step_s_per_page']['cls']:.2f}"
                f" rec {row[key]['step_s_per_page']['rec']:.2f} s)"
                for key in row if key.startswith("speed_"))
            print(f"{name}\n  CER clean {row['clean_300dpi']['cer']:.2%}  "
                  f"noisy {row['noisy_300dpi']['cer']:.2%}  codes {row['codes_200dpi']['cer']:.2%}  "
                  f"{speeds}", flush=True)
    from importlib.metadata import version

    payload = with_machine({"rapidocr": version("rapidocr"), "onnxruntime": version("onnxruntime"),
                            "pages": args.pages, "chars": sum(map(len, references)),
                            "repeats": args.repeats, "results": rows})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
