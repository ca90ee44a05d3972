"""Strict LoRA adapter loading: every key accounted for, every shape checked, ΔW ≠ 0.

peft's own loader warns and carries on when adapter keys do not match the
model, which is how "fused" models in earlier projects silently stayed plain.
Here any missing key, unexpected key or shape mismatch is an AdapterError,
and an adapter whose lora_B matrices are all zero (it changes nothing) is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbqa.errors import AdapterError

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class AdapterReport:
    """What loading one adapter did, for logs, the UI and the evaluator."""

    name: str
    folder: str
    tensors: int
    modules: int
    delta_norm: float


def read_adapter_weights(folder: Path) -> dict[str, Any]:
    """The adapter's tensors: safetensors, or a .bin read with weights_only (never full pickle)."""
    import torch
    from safetensors.torch import load_file

    for filename in WEIGHT_FILES:
        path = folder / filename
        if not path.is_file():
            continue
        try:
            if filename.endswith(".safetensors"):
                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt file, hostile pickle, truncated download
            raise AdapterError(f"cannot read adapter weights {path}: {exc}") from exc
    raise AdapterError(f"{folder} has no {' or '.join(WEIGHT_FILES)}")


def read_adapter_config(folder: Path, purpose: str = "this") -> Any:
    """The adapter's LoraConfig; anything but a LoRA adapter is refused (`purpose` names the
    action in the message)."""
    from peft import LoraConfig

    path = folder / "adapter_config.json"
    if not path.is_file():
        raise AdapterError(f"{folder} is not a peft adapter folder (no adapter_config.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot read {path}: {exc}") from exc
    if raw.get("peft_type") == "PREFIX_TUNING":
        raise AdapterError(f"{folder} is a prefix-tuning (P-tuning v2) adapter: {purpose} takes "
                           "LoRA adapters only")
    if raw.get("peft_type") != "LORA":
        raise AdapterError(f"{folder}: peft_type {raw.get('peft_type')!r} is not LORA")
    try:
        return LoraConfig.from_pretrained(str(folder))
    except (TypeError, ValueError) as exc:
        raise AdapterError(f"invalid LoRA config in {path}: {exc}") from exc


def check_keys(expected: dict[str, Any], found: dict[str, Any], folder: Path) -> None:
    """Refuse a missing or unexpected key or a shape that differs, naming them: strict loading."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found)
                        if tuple(expected[k].shape) != tuple(found[k].shape))
    if not (missing or unexpected or mismatched):
        return
    lines = [f"adapter {folder} does not fit this model "
             f"({len(found)} tensors in the file, {len(expected)} expected):"]
    if missing:
        lines.append(f"  {len(missing)} missing, e.g. {missing[:3]}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected, e.g. {unexpected[:3]}")
    for key in mismatched[:3]:
        lines.append(f"  shape of {key}: file {tuple(found[key].shape)}, "
                     f"model {tuple(expected[key].shape)}")
    if len(mismatched) > 3:
        lines.append(f"  ... {len(mismatched)} shape mismatches in all")
    lines.append("  (an adapter trained on a different base model must be transplanted first)")
    raise AdapterError("\n".join(lines))


def _delta_norm(weights: dict[str, Any]) -> tuple[float, int]:
    """Sum over modules of ‖B·A‖_F (the size of the change), and the number of modules."""
    total, modules = 0.0, 0
    for key, lora_a in weights.items():
        if ".lora_A." not in key:
            continue
        lora_b = weights.get(key.replace(".lora_A.", ".lora_B."))
        if lora_b is None:
            continue
        total += float((lora_b.float() @ lora_a.float()).norm())
        modules += 1
    return total, modules


def load_adapters(model: Any, folders: list[Path]) -> tuple[Any, list[AdapterReport]]:
    """Wrap `model` with each adapter, strictly; returns the peft model and one report per adapter.

    All adapters are active together; `peft_model.disable_adapter()` gives the plain model back
    without reloading it. After an AdapterError the model may already be wrapped: discard it.
    Linear layers packed by kbqa.llm.cpu_inference are unpacked first, in place.
    A prefix-tuning adapter (kbqa.adapters.prefix) loads only on its own, onto an unwrapped model:
    peft cannot hold it and LoRA adapters in one model.
    """
    from peft import PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    from kbqa.adapters.prefix import is_prefix_folder, load_prefix_adapter, refuse_foreign_cache
    from kbqa.llm.cpu_inference import unpack_linear_weights

    folders = [Path(f).expanduser() for f in folders]
    prefixes = [f for f in folders if is_prefix_folder(f)]
    if prefixes:
        if len(folders) > 1 or isinstance(model, PeftModel):
            raise AdapterError(f"cannot stack the prefix-tuning adapter {prefixes[0]} with other "
                               "adapters: a prefix adapter is used on its own (peft cannot put a "
                               "prefix and LoRA adapters in one model)")
        refuse_foreign_cache(model, prefixes[0])
        peft_model, report = load_prefix_adapter(model, prefixes[0])
        return peft_model, [report]

    unpack_linear_weights(model)  # peft wraps plain nn.Linear only; unpacking is exact
    reports: list[AdapterReport] = []
    peft_model = model
    names: list[str] = []
    for index, folder in enumerate(folders):
        if not folder.is_dir():
            raise AdapterError(f"adapter folder {folder} does not exist")
        config = read_adapter_config(folder, "loading")
        weights = read_adapter_weights(folder)
        name = f"adapter{index}_" + re.sub(r"[^0-9A-Za-z_-]", "_", folder.name)  # peft: no "."
        config.inference_mode = True
        try:
            if isinstance(peft_model, PeftModel):
                peft_model.add_adapter(name, config)
            else:
                peft_model = get_peft_model(peft_model, config, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise AdapterError(f"adapter {folder} does not fit this model: {exc}") from exc
        expected = get_peft_model_state_dict(peft_model, adapter_name=name)
        check_keys(expected, weights, folder)
        result = set_peft_model_state_dict(peft_model, weights, adapter_name=name)
        if getattr(result, "unexpected_keys", None):
            raise AdapterError(f"adapter {folder}: peft ignored {len(result.unexpected_keys)} keys, "
                               f"e.g. {result.unexpected_keys[:3]}")
        norm, modules = _delta_norm(weights)
        if norm == 0.0:
            raise AdapterError(f"adapter {folder} changes nothing: ΔW = B·A is zero in every "
                               "module (an untrained or wrongly converted adapter)")
        reports.append(AdapterReport(name=name, folder=str(folder), tensors=len(weights),
                                     modules=modules, delta_norm=norm))
        names.append(name)
    if names:
        peft_model.base_model.set_adapter(names)
        peft_model.eval()
    return peft_model, reports
