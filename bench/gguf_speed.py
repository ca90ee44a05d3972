"""The GGUF runtime (llama-cpp-python) on the embedded default's own GGUF file, against the same
prompt and the same physical bounds as bench/generation_speed.py.

kbqa ships the default model as Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF and runs it through
transformers in bf16 (peft adapters need that). This measures what the GGUF file does in
llama.cpp itself: TTFT on the same ~1k-token CMRC prompt, decode tokens/s (EOS suppressed), and
the greedy answer on the probe next to kbqa's bf16 answer.

llama-cpp-python publishes no wheel for this platform on PyPI; it builds from the sdist with a C
compiler and cmake (about 14 minutes on 2 cores):

    pip install llama-cpp-python==0.3.36       # into any venv that has kbqa installed
    python bench/gguf_speed.py --threads 2

Bounds: decode = (GGUF tensor bytes, all read per token since the output matrix is the tied
embedding, + the f16 KV cache) / copy bandwidth; prefill = 2 x block params x prompt tokens /
the int8 GEMM peak (llama.cpp multiplies Q4_K weights by int8-quantized activations).
Writes bench/results/gguf_speed.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from generation_speed import CACHE, RESULTS, build_prompts, measure_bounds

from machine_facts import with_machine
from kbqa.llm.local import LocalLLM
from kbqa.llm.loading import DEFAULT_LLM, EMBEDDED_LLMS, joined_gguf, resolve_llm


def timed_completion(model: Any, tokens: list[int], new_tokens: int, eos: int) -> tuple[float, float]:
    """(TTFT s, decode tok/s) of one greedy streamed completion of exactly `new_tokens` tokens."""
    model.reset()  # no prompt reuse between runs
    stamps = []
    start = time.perf_counter()
    for _ in model.create_completion(tokens, max_tokens=new_tokens, temperature=0.0, top_k=1,
                                     logit_bias={eos: -1e9}, stream=True):
        stamps.append(time.perf_counter())
    if len(stamps) < 2:
        raise RuntimeError(f"llama.cpp produced {len(stamps)} tokens, expected {new_tokens}")
    return stamps[0] - start, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--qid", default="DEV_58_QUERY_0")
    parser.add_argument("--json", type=Path, default=RESULTS / "gguf_speed.json")
    args = parser.parse_args()
    try:
        from llama_cpp import Llama
    except ImportError:
        parser.exit(2, "llama-cpp-python is not installed; see this script's docstring\n")

    gguf = joined_gguf(EMBEDDED_LLMS[DEFAULT_LLM], CACHE)
    reference = LocalLLM.from_folder(resolve_llm("embedded", CACHE), dtype="bfloat16",
                                     max_new_tokens=48, prefix_cache=None)
    prompts = build_prompts(reference, args.qid, args.prompt_tokens)
    bounds = measure_bounds(args.threads, quick=False)
    model = Llama(model_path=str(gguf), n_ctx=4096, n_threads=args.threads,
                  n_threads_batch=args.threads, n_batch=512, verbose=False)
    eos = model.token_eos()

    rows = {}
    for name, prompt in prompts.items():
        tokens = model.tokenize(reference.render(prompt).encode("utf-8"), add_bos=False,
                                special=True)
        timed_completion(model, tokens, args.new_tokens, eos)  # warm-up
        samples = [timed_completion(model, tokens, args.new_tokens, eos) for _ in range(args.runs)]
        rows[name] = {"prompt_tokens": len(tokens),
                      "ttft_s": statistics.median(s[0] for s in samples),
                      "decode_tok_s": statistics.median(s[1] for s in samples)}
        print(f"{name:>5} {len(tokens):>5} tokens: TTFT {rows[name]['ttft_s']:.2f} s, "
              f"decode {rows[name]['decode_tok_s']:.1f} tok/s", flush=True)

    config = reference.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    long = rows["long"]
    kv_bytes = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 2 \
        * long["prompt_tokens"]
    weight_bytes = gguf.stat().st_size
    block_params = sum(p.numel() for n, p in reference.model.named_parameters()
                       if ".layers." in n and p.dim() == 2)
    decode_bound = bounds["copy_bytes_per_s"] / (weight_bytes + kv_bytes)
    prefill_bound = 2 * block_params * long["prompt_tokens"] / bounds["gemm_flops"]["int8"]
    model.reset()
    tokens = model.tokenize(reference.render(prompts["top3"]).encode("utf-8"), add_bos=False,
                            special=True)
    gguf_answer = "".join(chunk["choices"][0]["text"] for chunk in model.create_completion(
        tokens, max_tokens=48, temperature=0.0, top_k=1, stream=True)).strip()
    bf16_answer = reference.invoke(prompts["top3"]).strip()
    result = {"gguf": str(gguf), "gguf_bytes": weight_bytes, "threads": args.threads,
              "bounds": bounds, "rows": rows, "decode_bound_tok_s": decode_bound,
              "decode_pct_of_bound": 100 * long["decode_tok_s"] / decode_bound,
              "prefill_bound_s": prefill_bound,
              "prefill_pct_of_bound": 100 * prefill_bound / long["ttft_s"],
              "probe": {"gguf_answer": gguf_answer, "bf16_answer": bf16_answer},
              "loadavg_end": os.getloadavg()}
    print(f"\n1k prompt: TTFT {long['ttft_s']:.2f} s = {result['prefill_pct_of_bound']:.0f}% of the "
          f"int8 GEMM bound; decode {long['decode_tok_s']:.1f} tok/s = "
          f"{result['decode_pct_of_bound']:.0f}% of the bandwidth bound "
          f"({decode_bound:.1f} tok/s)")
    print(f"probe answer: GGUF {gguf_answer!r}, kbqa bf16 {bf16_answer!r}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(with_machine(result), indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
