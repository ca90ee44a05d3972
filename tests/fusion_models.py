"""Tiny random models and adapters for the fusion tests (built from configs, seconds on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

ALL_ROLES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def save_llama(folder: Path, hidden: int = 64, layers: int = 4, heads: int = 4, kv_heads: int = 4,
               intermediate: int = 128, seed: int = 0, vocab: int = 256) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=intermediate,
                         vocab_size=vocab, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def save_qwen2(folder: Path, hidden: int = 96, layers: int = 3, heads: int = 6, kv_heads: int = 2,
               intermediate: int = 160, seed: int = 1) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=intermediate,
                         vocab_size=256, max_position_embeddings=128)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


def save_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def save_adapter(model_folder: Path, out: Path, targets: list[str] | None = None, r: int = 4,
                 alpha: int = 8, seed: int = 0, zero: bool = False) -> Path:
    """A peft LoRA on the model in `model_folder` with random lora_B (trained-looking)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha,
                                                  target_modules=targets or ALL_ROLES))
    torch.manual_seed(seed)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name and not zero:
            torch.nn.init.normal_(parameter, std=0.05)
    peft_model.save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(model_folder)
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def adapter_delta(adapter: Path, module: str) -> torch.Tensor:
    """scale·B·A straight from an adapter file (the reference, independent of kbqa)."""
    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    a = weights[f"base_model.model.{module}.lora_A.weight"]
    b = weights[f"base_model.model.{module}.lora_B.weight"]
    return config["lora_alpha"] / config["r"] * (b @ a)
