"""Generation speed on CPU for the default model, against the machine's own physical bounds.

For the embedded default (Qwen2.5-Coder-0.5B-Instruct) at a ~1k-token Chinese RAG prompt (CMRC 2018
dev passages, chunked like ingest, formatted by kbqa.qa.prompts and rendered through LocalLLM.render so
the chat template is applied), measures per configuration (fp32, bf16, int8 = torch.ao dynamic
quantization of every nn.Linear of the fp32 model, int8-weights = int8 weight-only quantization of
every nn.Linear of the bf16 model, kbqa.llm.quantization; all with kbqa.llm.cpu_inference's
speed-ups, and bf16-stock = bf16 through transformers' own path, the baseline for them) and per
torch thread count:

* TTFT (prefill): tokenisation + generate() until the first token's logits exist;
* decode tokens/s: greedy, --new-tokens forced tokens (EOS suppressed), median of --runs runs after
  one warm-up; a logits processor timestamps every step of one generate() call.

Bounds, measured in the same process at the same thread count:

* GEMM peak: torch.matmul of two large square fp32 / bf16 matrices, and an int8 dynamic quantized
  Linear of the same size (FLOP/s, best of several timed blocks);
  prefill bound = 2 x params x prompt tokens / peak, where params are the weights every prompt
  token is multiplied by (the decoder blocks' Linear layers; lm_head runs on the last position
  only); int8-weights prefills with dequantized bf16 weights, so against the bf16 peak;
* copy bandwidth: dst.copy_(src) of a large tensor, bytes read + written per second;
  decode bound = bytes read per token (all weights except the embedding table, one embedding row,
  and the KV cache) / copy bandwidth.

Correctness: each configuration's greedy answer on the probe prompt (normal stopping) and
max |logit diff| vs fp32 at the prompt's last position. Prompt size: TTFT at top_k=3 chunks (what
the default retrieval sends) vs the 1k prompt.

    python bench/generation_speed.py                 # full run (~10 min on 2 cores)
    python bench/generation_speed.py --quick         # tiny settings, to check the script

Writes JSON to bench/results/generation_speed.json (or --json).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from langchain_core.documents import Document
from transformers import LogitsProcessorList

from machine_facts import with_machine
from kbqa.llm.cpu_inference import PackedLinear
from kbqa.ingest.splitter import ChineseTextSplitter
from kbqa.llm.local import LocalLLM
from kbqa.llm.loading import resolve_llm
from kbqa.qa.prompts import build_prompt, format_context
from kbqa.llm.quantization import Int8WeightLinear

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")

RESULTS = Path(__file__).resolve().parent / "results"
EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "cmrc2018" / "dev"
CACHE = Path.home() / ".cache" / "kbqa-tests"
CONFIGS = ("fp32", "bf16-stock", "bf16", "int8", "int8-weights")
# int8-weights prefills through dequantized bf16 weights (kbqa.llm.quantization.INT8PACK_MAX_ROWS)
GEMM_PEAK_OF = {"int8-weights": "bf16", "bf16-stock": "bf16"}


# ----------------------------------------------------------------------------- prompts

def _jsonl(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def rag_chunks(qid: str) -> tuple[str, list[Document]]:
    """The probe question and retrieval-like chunks: its passage's chunks first, then others'."""
    docs = _jsonl(EVAL / "docs.jsonl")
    question = next(q for q in _jsonl(EVAL / "questions.jsonl") if q["qid"] == qid)
    start = next(i for i, d in enumerate(docs) if d["doc_id"] == question["doc_id"])
    splitter = ChineseTextSplitter(chunk_size=300, chunk_overlap=50)  # the ingest defaults
    chunks = [Document(page_content=text, metadata={"filename": f"{doc['title']}.txt"})
              for doc in docs[start:] + docs[:start] for text in splitter.split_text(doc["text"])]
    return question["question"], chunks


def prompt_tokens(llm: LocalLLM, prompt: str) -> int:
    """Tokens the model reads for a user prompt (chat template applied)."""
    return len(llm.tokenizer(llm.render(prompt), add_special_tokens=False)["input_ids"])


def build_prompts(llm: LocalLLM, qid: str, target: int) -> dict[str, str]:
    """{'top1'..'top3': top_k=1..3 prompts (3 is the default), 'long': >= target tokens}."""
    question, chunks = rag_chunks(qid)
    template = build_prompt()

    def fill(k: int) -> str:
        return template.format(context=format_context(chunks[:k]), question=question)

    k = 1
    while k < len(chunks) and prompt_tokens(llm, fill(k)) < target:
        k += 1
    return {**{f"top{i}": fill(i) for i in (1, 2, 3)}, "long": fill(k)}


def chunk_token_stats(llm: LocalLLM) -> dict[str, float]:
    """Tokens per chunk over the whole dev corpus, to put the probe's top-3 size in context."""
    splitter = ChineseTextSplitter(chunk_size=300, chunk_overlap=50)
    texts = [t for doc in _jsonl(EVAL / "docs.jsonl") for t in splitter.split_text(doc["text"])]
    counts = sorted(len(llm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return {"chunks": len(counts), "mean": statistics.fmean(counts),
            "median": statistics.median(counts), "p90": counts[int(0.9 * (len(counts) - 1))]}


# ----------------------------------------------------------------------------- bounds

def _best_rate(work: float, step: Callable[[], Any], seconds: float, blocks: int = 5) -> float:
    """Highest work/s over `blocks` timed blocks of repeated `step()` calls (after one warm-up)."""
    step()
    best = 0.0
    for _ in range(blocks):
        count, start = 0, time.perf_counter()
        while True:
            step()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / blocks:
                break
        best = max(best, work * count / elapsed)
    return best


def gemm_peaks(n: int, seconds: float) -> dict[str, float]:
    """FLOP/s of an n x n x n product: fp32 and bf16 matmul, int8 dynamic quantized Linear."""
    from torch.ao.quantization import quantize_dynamic

    flops = 2.0 * n ** 3
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    peaks = {"fp32": _best_rate(flops, lambda: torch.matmul(a, b), seconds)}
    a16, b16 = a.bfloat16(), b.bfloat16()
    peaks["bf16"] = _best_rate(flops, lambda: torch.matmul(a16, b16), seconds)
    linear = quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)),
                              {torch.nn.Linear}, dtype=torch.qint8)
    peaks["int8"] = _best_rate(flops, lambda: linear(a), seconds)
    return peaks


def copy_bandwidth(megabytes: int, seconds: float) -> float:
    """Bytes/s of dst.copy_(src) for a large fp32 tensor, counting bytes read + bytes written."""
    src = torch.rand(megabytes * (1 << 20) // 4)
    dst = torch.empty_like(src)
    return _best_rate(2.0 * src.numel() * 4, lambda: dst.copy_(src), seconds)


def measure_bounds(threads: int, quick: bool) -> dict[str, Any]:
    """GEMM peaks and copy bandwidth at a given torch thread count."""
    torch.set_num_threads(threads)
    with torch.inference_mode():
        peaks = gemm_peaks(512 if quick else 2048, 0.5 if quick else 4.0)
        bandwidth = copy_bandwidth(64 if quick else 1024, 0.5 if quick else 4.0)
    return {"threads": threads, "gemm_flops": peaks, "copy_bytes_per_s": bandwidth}


# ----------------------------------------------------------------------------- model accounting

def _is_dynamic_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.ao.nn.quantized.dynamic.Linear)


def model_accounting(model: torch.nn.Module, context_tokens: float) -> dict[str, float]:
    """Matmul params per prompt token, lm_head params, and bytes read per decoded token.

    Bytes per token: every weight except the embedding table (one row of it is read), int8
    Linear weights at 1 byte each (int8-weights: plus their bf16 scales), plus the KV cache of
    `context_tokens` positions.
    """
    config = model.config
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    block_params = head_params = 0
    weight_bytes = 0.0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or _is_dynamic_linear(module):
            weight = module.weight() if _is_dynamic_linear(module) else module.weight
            bias = module.bias() if _is_dynamic_linear(module) else module.bias
            if module is head:
                head_params += weight.numel()
            else:
                block_params += weight.numel()
            weight_bytes += weight.numel() * weight.element_size()
            if bias is not None:
                weight_bytes += bias.numel() * bias.element_size()
        elif isinstance(module, PackedLinear):  # bf16 weights in oneDNN's layout
            params = module.in_features * module.out_features
            if module is head:
                head_params += params
            else:
                block_params += params
            weight_bytes += params * 2 + (0 if module.bias is None else module.bias.numel() * 2)
        elif isinstance(module, Int8WeightLinear):  # int8 weights, bf16 scales and bias
            if module is head:
                head_params += module.weight_int8.numel()
            else:
                block_params += module.weight_int8.numel()
            weight_bytes += sum(b.numel() * b.element_size() for b in module.buffers())
        elif not isinstance(module, torch.nn.Embedding):  # norms: their own weights only
            own = module.parameters(recurse=False)
            weight_bytes += sum(p.numel() * p.element_size() for p in own)
    weight_bytes += embedding.shape[1] * embedding.element_size()
    kv_dtype_bytes = embedding.element_size()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_bytes = (2 * config.num_hidden_layers * config.num_key_value_heads * head_dim
                * kv_dtype_bytes * context_tokens)
    return {"block_linear_params": block_params, "lm_head_params": head_params,
            "weight_bytes_per_token": weight_bytes, "kv_bytes_per_token": kv_bytes,
            "bytes_per_token": weight_bytes + kv_bytes}


# ----------------------------------------------------------------------------- timing

class _StepClock:
    """A logits processor that only records when each generation step's logits are ready."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def timed_generate(llm: LocalLLM, prompt: str, new_tokens: int) -> tuple[float, float]:
    """(TTFT seconds, decode tokens/s) of one greedy generate() as the app calls it.

    EOS is suppressed (min_new_tokens) so that every run decodes exactly `new_tokens` tokens.
    """
    clock = _StepClock()
    start = time.perf_counter()
    # the prefix-cache lease is never given back, so every run computes the whole prompt
    generation, _ = llm._generation_kwargs(prompt, None, max_new_tokens=new_tokens)
    generation.update(min_new_tokens=new_tokens, logits_processor=LogitsProcessorList([clock]))
    with torch.inference_mode():
        llm.model.generate(**generation)
    ttft = clock.times[0] - start
    steps = len(clock.times) - 1
    if steps != new_tokens - 1:
        raise RuntimeError(f"generate() made {steps + 1} tokens, expected {new_tokens}")
    decode = steps / (clock.times[-1] - clock.times[0]) if steps else 0.0
    return ttft, decode


def time_config(llm: LocalLLM, prompt: str, new_tokens: int, runs: int) -> dict[str, Any]:
    """Median TTFT and decode rate over `runs` runs after one warm-up."""
    timed_generate(llm, prompt, new_tokens)
    samples = [timed_generate(llm, prompt, new_tokens) for _ in range(runs)]
    return {"ttft_s": statistics.median(s[0] for s in samples),
            "decode_tok_s": statistics.median(s[1] for s in samples),
            "ttft_samples": [s[0] for s in samples], "decode_samples": [s[1] for s in samples]}


def probe(llm: LocalLLM, prompt: str, max_new_tokens: int) -> tuple[str, torch.Tensor]:
    """The greedy answer (normal stopping) and the logits at the prompt's last position."""
    answer = llm.invoke(prompt, max_new_tokens=max_new_tokens)
    ids = llm.tokenizer(llm.render(prompt), return_tensors="pt",
                        add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = llm.model(input_ids=ids).logits[0, -1].float()
    return answer, logits


def _op_group(name: str) -> str:
    """Coarse kind of a profiled operator."""
    if "attention" in name or "softmax" in name:
        return "attention"
    if any(k in name for k in ("mm", "linear", "matmul", "gemm")):
        return "gemm"
    if any(k in name for k in ("cat", "copy", "index", "contiguous", "clone", "to", "empty")):
        return "copy/cache"
    return "elementwise/other"


def _profiled(work: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run `work` under the CPU profiler; its result and the time split by operator group."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        value = work()
        wall = time.perf_counter() - start
    events = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    groups: dict[str, float] = {}
    for key, seconds in events:
        groups[_op_group(key)] = groups.get(_op_group(key), 0.0) + seconds
    groups["framework"] = max(0.0, wall - sum(groups.values()))
    return value, {"wall_s": wall, "share": {k: v / wall for k, v in groups.items()},
                   "top_ops": sorted(events, key=lambda e: -e[1])[:6]}


def profile_split(llm: LocalLLM, prompt: str, steps: int) -> dict[str, Any]:
    """Where one prefill and `steps` cached greedy decode steps spend time (profiler self time).

    'framework' is the wall time of the profiled region not covered by any operator's self time:
    Python, module calls, cache bookkeeping (inflated somewhat by the profiler itself).
    """
    model = llm.model
    ids = llm.tokenizer(llm.render(prompt), return_tensors="pt",
                        add_special_tokens=False)["input_ids"]

    def decode(out: Any) -> Any:
        for _ in range(steps):
            token = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
        return out

    with torch.inference_mode():
        model(input_ids=ids[:, :16], use_cache=True)  # warm-up
        out, prefill = _profiled(lambda: model(input_ids=ids, past_key_values=llm.new_cache(),
                                               use_cache=True, logits_to_keep=1))
        _, decoded = _profiled(lambda: decode(out))
    return {"prefill": prefill, "decode": decoded}


# ----------------------------------------------------------------------------- the run

def load_config(name: str, fp32: LocalLLM | None) -> LocalLLM:
    """bf16 and int8-weights from the app's default folder; fp32 from the float32 conversion;
    int8 from fp32."""
    if name == "int8":
        from torch.ao.quantization import quantize_dynamic

        assert fp32 is not None
        model = quantize_dynamic(fp32.model, {torch.nn.Linear}, dtype=torch.qint8)
        return LocalLLM(model=model, tokenizer=fp32.tokenizer, model_name=f"{fp32.model_name}-int8")
    dtype = {"fp32": "float32", "bf16": "bfloat16", "bf16-stock": "bfloat16",
             "int8-weights": "int8-weights"}[name]
    folder = resolve_llm("embedded", CACHE, dtype=dtype)
    return LocalLLM.from_folder(folder, dtype=dtype, cpu_speedups=name != "bf16-stock")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Bounds first, then each configuration; returns everything that goes into the JSON."""
    result: dict[str, Any] = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(), "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "args": vars(args),
    }
    result["bounds"] = {t: measure_bounds(t, args.quick) for t in args.threads}
    for t, b in result["bounds"].items():
        print(f"bounds @{t}t: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in
                                             b["gemm_flops"].items())
              + f", copy {b['copy_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)

    rows: list[dict[str, Any]] = []
    probes: dict[str, dict[str, Any]] = {}
    reference: torch.Tensor | None = None
    fp32: LocalLLM | None = None
    prompts: dict[str, str] = {}
    order = [c for c in ("fp32", "int8", "bf16-stock", "bf16", "int8-weights")  # int8 from fp32
             if c in args.configs]
    if "int8" in order and "fp32" not in order:
        order.insert(0, "fp32")
    for name in order:
        llm = load_config(name, fp32)
        if name == "fp32":
            fp32 = llm
        if not prompts:
            prompts = build_prompts(llm, args.qid, args.prompt_tokens)
            result["prompt_tokens"] = {k: prompt_tokens(llm, p) for k, p in prompts.items()}
            result["probe_prompt"] = llm.render(prompts["long"])
            result["corpus_chunk_tokens"] = chunk_token_stats(llm)
        torch.set_num_threads(max(args.threads))
        answer, logits = probe(llm, prompts["long"], args.answer_tokens)
        if reference is None:
            reference = logits
        probes[name] = {"answer": answer,
                        "max_abs_logit_diff_vs_fp32": float((logits - reference).abs().max()),
                        "top1_same_as_fp32": bool(logits.argmax() == reference.argmax())}
        if name not in args.configs:
            continue
        tokens = result["prompt_tokens"]["long"]
        accounting = model_accounting(llm.model, tokens + args.new_tokens / 2)
        for threads in args.threads:
            torch.set_num_threads(threads)
            timing = time_config(llm, prompts["long"], args.new_tokens, args.runs)
            bound = result["bounds"][threads]
            prefill_flops = 2.0 * accounting["block_linear_params"] * tokens
            prefill_bound_s = prefill_flops / bound["gemm_flops"][GEMM_PEAK_OF.get(name, name)]
            decode_bound = bound["copy_bytes_per_s"] / accounting["bytes_per_token"]
            row = {"config": name, "threads": threads, "prompt_tokens": tokens, **timing,
                   **accounting, "prefill_bound_s": prefill_bound_s,
                   "prefill_pct_of_bound": 100 * prefill_bound_s / timing["ttft_s"],
                   "decode_bound_tok_s": decode_bound,
                   "decode_pct_of_bound": 100 * timing["decode_tok_s"] / decode_bound}
            if threads == max(args.threads):
                row["ttft_by_prompt"] = {
                    key: {"tokens": result["prompt_tokens"][key],
                          "ttft_s": time_config(llm, prompts[key], 1, args.runs)["ttft_s"]}
                    for key in ("top1", "top2", "top3")}
                row["ttft_by_prompt"]["long"] = {"tokens": tokens, "ttft_s": timing["ttft_s"]}
                if args.profile_steps:
                    row["profile"] = profile_split(llm, prompts["long"], args.profile_steps)
            rows.append(row)
            print(f"  {name} @{threads}t: TTFT {timing['ttft_s']:.2f} s, "
                  f"decode {timing['decode_tok_s']:.1f} tok/s", flush=True)
        if name != "fp32":
            del llm
            gc.collect()
    result.update(rows=rows, probes=probes, loadavg_end=os.getloadavg(),
                  finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return result


def print_tables(result: dict[str, Any]) -> None:
    """The human-readable tables."""
    print(f"\nload average at start {result['loadavg_start'][0]:.2f}, "
          f"at end {result['loadavg_end'][0]:.2f}; torch {result['torch']}")
    print("\nBounds (same machine, same process)")
    print(f"{'threads':>7} {'fp32 GEMM':>12} {'bf16 GEMM':>12} {'int8 GEMM':>12} {'copy BW':>10}")
    for t, b in result["bounds"].items():
        g = b["gemm_flops"]
        print(f"{t:>7} {g['fp32'] / 1e9:>6.0f} GFLOP/s {g['bf16'] / 1e9:>4.0f} GFLOP/s "
              f"{g['int8'] / 1e9:>4.0f} GFLOP/s {b['copy_bytes_per_s'] / 1e9:>5.1f} GB/s")
    print(f"\nGeneration, {result['prompt_tokens']['long']}-token prompt, "
          f"{result['args']['new_tokens']} greedy tokens, median of {result['args']['runs']}")
    header = (f"{'config':<12} {'thr':>3} {'TTFT s':>7} {'bound s':>7} {'prefill %':>9} "
              f"{'dec tok/s':>9} {'bound':>7} {'decode %':>8} {'MB/token':>8}")
    print(header)
    for r in result["rows"]:
        print(f"{r['config']:<12} {r['threads']:>3} {r['ttft_s']:>7.2f} "
              f"{r['prefill_bound_s']:>7.2f} "
              f"{r['prefill_pct_of_bound']:>8.0f}% {r['decode_tok_s']:>9.1f} "
              f"{r['decode_bound_tok_s']:>7.1f} {r['decode_pct_of_bound']:>7.0f}% "
              f"{r['bytes_per_token'] / 1e6:>8.0f}")
    stats = result["corpus_chunk_tokens"]
    print(f"\nPrompt size: TTFT by prompt (top_k=3 is the default; dev chunks average "
          f"{stats['mean']:.0f} tokens, median {stats['median']:.0f}, p90 {stats['p90']})")
    sizes = result["prompt_tokens"]
    print(f"{'config':<12} {'thr':>3} " + " ".join(f"{k + ' ' + str(v) + ' tok':>15}"
                                                  for k, v in sizes.items()))
    for r in result["rows"]:
        if "ttft_by_prompt" in r:
            print(f"{r['config']:<12} {r['threads']:>3} " + " ".join(
                f"{r['ttft_by_prompt'][k]['ttft_s']:>13.2f} s" for k in sizes))
    profiled = [r for r in result["rows"] if "profile" in r]
    if profiled:
        groups = ("gemm", "attention", "copy/cache", "elementwise/other", "framework")
        print("\nWhere the time goes (profiler, share of wall time; decode over "
              f"{result['args']['profile_steps']} steps)")
        print(f"{'config':<12} {'phase':<8} {'wall s':>7} " + " ".join(f"{g:>17}" for g in groups))
        for r in profiled:
            for phase, p in r["profile"].items():
                print(f"{r['config']:<12} {phase:<8} {p['wall_s']:>7.2f} " + " ".join(
                    f"{100 * p['share'].get(g, 0.0):>16.0f}%" for g in groups))
    print("\nCorrectness on the probe prompt (greedy answer; last-position logits vs fp32)")
    for name, p in result["probes"].items():
        print(f"{name:<12} max|dlogit| {p['max_abs_logit_diff_vs_fp32']:6.3f}  "
              f"top1 same {str(p['top1_same_as_fp32']):<5}  answer: {p['answer']!r}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--qid", default="DEV_58_QUERY_0")
    parser.add_argument("--profile-steps", type=int, default=16,
                        help="decode steps to profile per configuration (0: no profile)")
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the script")
    parser.add_argument("--json", type=Path, default=RESULTS / "generation_speed.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompt_tokens, args.new_tokens, args.answer_tokens, args.runs = 200, 4, 8, 1
        args.profile_steps = min(args.profile_steps, 2)
    result = run(args)
    print_tables(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(with_machine(result), ensure_ascii=False, indent=2, default=str),
                         encoding="utf-8")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
