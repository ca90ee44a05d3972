"""Answer-token loss of a model with and without adapters, on CMRC train examples no adapter was
trained on: a cheap screen of transplant variants (forward passes only) before a full `kbqa eval`.

    python bench/adapter_nll.py --model embedded:qwen2.5-coder-1.5b-instruct \\
        --adapter direct=adapters/qwen1.5b-cmrc-direct \\
        --adapter transplanted=adapters/qwen0.5b-cmrc-transplanted-to-qwen1.5b --examples 40

The examples are kbqa's training prompts (kbqa.adapters.train.cmrc_examples, seed 0) after the
first --skip (default 120, the steps every shipped CMRC adapter trained for, batch 1), so none was
seen in training. Reported per variant: mean answer-token NLL (nats/token), its difference from
plain with a paired bootstrap 95% CI over examples, and the share of the direct adapter's drop
that a variant recovers, when a variant is named 'direct'. Writes one JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from machine_facts import with_machine

from kbqa.adapters.loading import load_adapters
from kbqa.adapters.train import cmrc_examples, encode
from kbqa.config import load_settings
from kbqa.llm.loading import resolve_llm

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "cmrc2018"


def example_losses(model: torch.nn.Module, batches: list[tuple[list[int], list[int]]]) -> list[float]:
    """Mean answer-token NLL of each (ids, labels) example."""
    losses = []
    with torch.inference_mode():
        for ids, labels in batches:
            losses.append(model(input_ids=torch.tensor([ids]),
                                labels=torch.tensor([labels])).loss.item())
    return losses


def paired_ci(deltas: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean of paired differences."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(deltas, k=len(deltas))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="kbqa llm setting: 'embedded:NAME' or a folder")
    parser.add_argument("--adapter", action="append", default=[], help="NAME=ADAPTER_DIR (repeat)")
    parser.add_argument("--cmrc", type=Path, default=EVAL / "train")
    parser.add_argument("--skip", type=int, default=120, help="examples the adapters trained on")
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports" / "adapter-nll.json")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = load_settings({})
    folder = resolve_llm(args.model, settings.cache_dir, "bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    examples = cmrc_examples(args.cmrc)[args.skip:args.skip + args.examples]
    batches = [encode(tokenizer, example, 1024) for example in examples]
    variants: dict[str, dict] = {}
    plain_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    started = time.perf_counter()
    variants["plain"] = {"losses": example_losses(plain_model, batches),
                         "seconds": time.perf_counter() - started}
    for spec in args.adapter:
        name, _, path = spec.partition("=")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        peft_model, _ = load_adapters(model, [Path(path)])
        started = time.perf_counter()
        variants[name] = {"adapter": path, "losses": example_losses(peft_model.eval(), batches),
                          "seconds": time.perf_counter() - started}
        del model, peft_model
    plain = variants["plain"]["losses"]
    direct = variants.get("direct")
    direct_drop = statistics.fmean(plain) - statistics.fmean(direct["losses"]) if direct else None
    print(f"{args.model}, {len(batches)} held-out examples\n| variant | NLL | Δ vs plain [95% CI] |"
          " share of direct's drop |\n|---|---|---|---|")
    for name, variant in variants.items():
        mean = statistics.fmean(variant["losses"])
        variant["nll"] = mean
        line = f"| {name} | {mean:.3f} |"
        if name != "plain":
            deltas = [a - b for a, b in zip(variant["losses"], plain, strict=True)]
            low, high = paired_ci(deltas)
            variant |= {"delta": statistics.fmean(deltas), "ci95": [low, high]}
            line += f" {variant['delta']:+.3f} [{low:+.3f}, {high:+.3f}] |"
            if direct_drop:
                variant["share_of_direct"] = -variant["delta"] / direct_drop
                line += f" {variant['share_of_direct']:.2f} |"
        print(line, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "examples": len(batches), "skip": args.skip, "variants": variants}
    args.out.write_text(json.dumps(with_machine(report), indent=1), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
