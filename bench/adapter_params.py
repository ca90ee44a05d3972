"""Trainable parameters of a LoRA and of a prefix (P-tuning v2) on one model, to match budgets.

Counts come from peft itself on the model built on the meta device (no weights read), so the
figures are what `kbqa adapters train` would train. Prints one row per setting and the prefix
length whose size equals each LoRA's (a multiple of the prefix's width per virtual token).

    python bench/adapter_params.py --model embedded --targets q_proj,v_proj --targets q_proj,k_proj,v_proj,o_proj
"""

from __future__ import annotations

import argparse
import warnings


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from kbqa.adapters.cli import _model_folder
    from kbqa.adapters.prefix import geometry_for, prefix_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="folder, 'embedded' or 'embedded:NAME'")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", action="append", help="LoRA targets, comma-separated "
                        "(repeatable; default q_proj,v_proj)")
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(_model_folder(args.model))
    geometry = geometry_for(config)

    def fresh():
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)

    print(f"{args.model}: {geometry.num_layers} layers, {geometry.kv_heads} key/value heads × "
          f"{geometry.head_dim}; a prefix costs {geometry.width} parameters per virtual token")
    warnings.simplefilter("ignore")
    for targets in args.targets or ["q_proj,v_proj"]:
        lora = trainable(get_peft_model(fresh(), LoraConfig(
            r=args.rank, lora_alpha=2 * args.rank, target_modules=targets.split(","),
            task_type="CAUSAL_LM")))
        tokens = lora // geometry.width
        prefix = trainable(get_peft_model(fresh(), prefix_config(geometry, tokens,
                                                                 inference=False)))
        print(f"LoRA r={args.rank} on {targets}: {lora:,} | prefix of {tokens} virtual tokens: "
              f"{prefix:,} ({'equal' if prefix == lora else f'{lora - prefix:,} fewer'})")


if __name__ == "__main__":
    main()
