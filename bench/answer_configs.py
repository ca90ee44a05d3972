"""Answer quality against latency on CMRC 2018 dev: model precision × passages in the prompt.

Each configuration answers the same dev questions end to end through `KbqaService.stream`
(retrieval with the app's settings, the Chinese template, greedy decoding) on the KB of
dev + train passages. Per configuration it prints EM / F1 (with a paired-bootstrap 95 % CI of
ΔF1 against the first configuration), refusals, mean prompt tokens, and p50 of the stage
timings the service reports (retrieve, prefill, decode, time to first token, total) with
decode tokens/s. Configurations are `PRECISION:TOP_K`; PRECISION is bf16 (the app default),
bf16-stock (bf16 without kbqa.llm.cpu_inference's speed-ups: transformers' own path), fp32, int8
(torch.ao dynamic quantization of every nn.Linear of the fp32 model), or int8-weights (int8
weight-only quantization of every nn.Linear of the bf16 model, kbqa.llm.quantization).

    python bench/answer_configs.py --home /tmp/cmrc-home                       # all 202
    python bench/answer_configs.py --home /tmp/cmrc-home --limit 40 --configs bf16:3 int8:3
    python bench/answer_configs.py --home /tmp/cmrc-home --configs bf16:3 int8-weights:3
    python bench/answer_configs.py --home /tmp/cmrc-home --configs bf16-stock:3 bf16:3

Latencies need an otherwise idle machine; EM/F1 do not. Writes bench/results/answer_configs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from machine_facts import with_machine
from kbqa.config import load_settings
from kbqa.evaluation.stats import paired_bootstrap
from kbqa.llm.local import LocalLLM
from kbqa.evaluation.metrics import exact_match, f1_score
from kbqa.llm.loading import resolve_llm
from kbqa.service import KbqaService

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "cmrc2018"
RESULTS = Path(__file__).resolve().parent / "results"
warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_kb(service: KbqaService) -> int:
    """Ingest the dev + train passages once (one .txt each: title, blank line, text)."""
    kb = service.knowledge_base(create=True)
    if not kb.chunk_count:
        docs = _jsonl(EVAL / "dev" / "docs.jsonl") + _jsonl(EVAL / "train" / "docs.jsonl")
        with tempfile.TemporaryDirectory() as folder:
            for doc in docs:
                (Path(folder) / f"{doc['doc_id']}.txt").write_text(
                    f"{doc['title']}\n\n{doc['text']}", encoding="utf-8")
            kb.ingest([Path(folder)], progress=True)
    return kb.chunk_count


def load_llm(precision: str, cache: Path) -> LocalLLM:
    """bf16 / fp32 / int8-weights from the embedded default's converted folders (int8-weights
    quantized from bf16 as the app does); int8 quantized from fp32."""
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        fp32 = load_llm("fp32", cache)
        model = quantize_dynamic(fp32.model, {torch.nn.Linear}, dtype=torch.qint8)
        return LocalLLM(model=model, tokenizer=fp32.tokenizer, model_name="default-int8")
    dtype = {"bf16": "bfloat16", "bf16-stock": "bfloat16", "fp32": "float32",
             "int8-weights": "int8-weights"}[precision]
    return LocalLLM.from_folder(resolve_llm("embedded", cache, dtype), dtype=dtype,
                                cpu_speedups=precision != "bf16-stock")


def answer_all(service: KbqaService, questions: list[dict], top_k: int, label: str) -> list[dict]:
    rows = []
    for number, q in enumerate(questions, start=1):
        answer = service.ask(q["question"], top_k=top_k)
        rows.append({"qid": q["qid"], "prediction": answer.text, "refused": answer.refused,
                     "em": exact_match(answer.text, q["answers"]),
                     "f1": f1_score(answer.text, q["answers"]),
                     "timings": answer.timings, "usage": answer.usage,
                     "decode_tok_s": answer.decode_rate()})
        print(f"[{label} {number}/{len(questions)}] {answer.timings['total']:.1f}s "
              f"{q['question']} → {answer.text[:40]!r}", file=sys.stderr, flush=True)
    return rows


def _p50(rows: list[dict], key: str) -> float | None:
    values = [r["timings"][key] for r in rows if key in r["timings"]]
    return statistics.median(values) if values else None


def summarise(rows: list[dict], baseline: list[dict] | None) -> dict[str, Any]:
    rates = [r["decode_tok_s"] for r in rows if r["decode_tok_s"]]
    prompts = [r["usage"]["prompt_tokens"] for r in rows if r["usage"]]
    summary = {
        "n": len(rows), "em": statistics.fmean(r["em"] for r in rows),
        "f1": statistics.fmean(r["f1"] for r in rows),
        "refused": statistics.fmean(r["refused"] for r in rows),
        "prompt_tokens_mean": statistics.fmean(prompts) if prompts else None,
        **{f"{k}_p50_s": _p50(rows, k)
           for k in ("retrieve", "prefill", "decode", "first_token", "total")},
        "decode_tok_s_p50": statistics.median(rates) if rates else None,
    }
    if baseline is not None:
        delta = paired_bootstrap([r["f1"] - b["f1"] for r, b in zip(rows, baseline)])
        summary["delta_f1"] = {"mean": delta.mean, "low": delta.low, "high": delta.high}
        summary["answers_changed"] = sum(r["prediction"] != b["prediction"]
                                         for r, b in zip(rows, baseline))
    return summary


def print_table(summaries: dict[str, dict]) -> None:
    head = (f"{'config':<15}{'EM':>7}{'F1':>7}{'ΔF1 [95% CI]':>24}{'refused':>9}{'prompt tok':>11}"
            f"{'prefill':>9}{'TTFT':>7}{'decode':>8}{'tok/s':>7}{'total':>7}")
    print(head)
    for name, s in summaries.items():
        d = s.get("delta_f1")
        delta = f"{d['mean']:+.3f} [{d['low']:+.3f},{d['high']:+.3f}]" if d else "baseline"
        print(f"{name:<15}{s['em']:>7.3f}{s['f1']:>7.3f}{delta:>24}{s['refused']:>9.3f}"
              f"{s['prompt_tokens_mean'] or 0:>11.0f}{s['prefill_p50_s'] or 0:>8.2f}s"
              f"{s['first_token_p50_s'] or 0:>6.2f}s{s['decode_p50_s'] or 0:>7.2f}s"
              f"{s['decode_tok_s_p50'] or 0:>7.1f}{s['total_p50_s'] or 0:>6.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="KBQA home for the benchmark KB")
    parser.add_argument("--configs", nargs="+", default=["bf16:3", "bf16:2", "int8:3", "int8:2"])
    parser.add_argument("--limit", type=int, default=0, help="first N dev questions (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "answer_configs.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    questions = [q for q in _jsonl(EVAL / "dev" / "questions.jsonl") if q.get("answer_in_doc", True)]
    questions = questions[: args.limit or None]
    settings = load_settings({"home": args.home, "kb": "cmrc"}, environ={})  # as bench/cmrc_dev.py
    chunks = build_kb(KbqaService(settings))
    loaded: dict[str, LocalLLM] = {}
    raw: dict[str, list[dict]] = {}
    summaries: dict[str, dict] = {}
    for config in args.configs:
        precision, _, top_k = config.partition(":")
        if precision not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[precision] = load_llm(precision, settings.cache_dir)
        service = KbqaService(settings, llm=loaded[precision])
        service.ask(questions[0]["question"], top_k=int(top_k))  # warm-up, not counted
        raw[config] = answer_all(service, questions, int(top_k), config)
        baseline = raw[args.configs[0]] if config != args.configs[0] else None
        summaries[config] = summarise(raw[config], baseline)
    print_table(summaries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(with_machine({
        "questions": len(questions), "kb_chunks": chunks, "loadavg_end": os.getloadavg(),
        "torch_threads": torch.get_num_threads(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "summaries": summaries, "answers": raw}), ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
