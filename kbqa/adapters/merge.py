"""Bake adapters into the base weights: a standalone model folder that needs no peft at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kbqa.adapters.loading import load_adapters


def merge_to_folder(model_folder: Path, adapter_folders: list[Path], out: Path,
                    dtype: str = "bfloat16") -> Path:
    """Load strictly, merge_and_unload, save safetensors weights + tokenizer to `out`."""
    import torch

    from kbqa.adapters.prefix import refuse_prefix

    refuse_prefix([Path(f).expanduser() for f in adapter_folders], "merge",
                  "a prefix cannot be merged into the weights: it adds key/value positions in "
                  "front of the prompt and changes no weight. Select it as a variant instead.")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_folder = Path(model_folder).expanduser()
    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
    peft_model, _ = load_adapters(model, [Path(f) for f in adapter_folders])
    merged: Any = peft_model.merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    out = Path(out)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_folder).save_pretrained(out)
    return out
