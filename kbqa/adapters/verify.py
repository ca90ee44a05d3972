"""Prove an adapter is applied: strict load, ΔW ≠ 0 in every module, logits actually move.

The contract, shared by the evaluator and the UI:
- anything that cannot be loaded strictly (missing/unexpected keys, shape mismatches, an
  adapter whose every lora_B is zero, unreadable files) raises AdapterError — there is no
  model to report on;
- an adapter that loads but leaves some modules at ΔW = 0, or does not move the probe's
  logits by more than `tolerance`, yields a VerifyReport with applied=False and the reasons.
The plain logits come from the same model with `disable_adapter()`: no second load. A prefix
adapter (kbqa.adapters.prefix) has no ΔW; for it the logits alone decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kbqa.adapters.loading import AdapterReport, load_adapters
from kbqa.llm.prefix_cache import is_prompt_learning

DEFAULT_PROBE = "根据资料回答问题。资料：长城是中国古代的军事防御工程。问题：长城是什么？答案："


@dataclass
class VerifyReport:
    applied: bool
    max_logit_diff: float
    modules: int
    zero_modules: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    adapters: list[AdapterReport] = field(default_factory=list)


def module_delta_norms(peft_model: Any) -> dict[str, float]:
    """‖scale·B·A‖_F per (module, adapter) as loaded into the model — not as read from disk."""
    norms: dict[str, float] = {}
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            _module_norms(name, module, norms)
    return norms


def _module_norms(name: str, module: Any, norms: dict[str, float]) -> None:
    lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
    if not isinstance(lora_a, torch.nn.ModuleDict) or not isinstance(lora_b, torch.nn.ModuleDict):
        return
    for adapter in lora_a:
        scale = module.scaling.get(adapter, 1.0)
        delta = lora_b[adapter].weight.float() @ lora_a[adapter].weight.float()
        norms[f"{name}[{adapter}]"] = float(delta.norm()) * scale


def _load(model_or_folder: Any, tokenizer: Any) -> tuple[Any, Any]:
    if not isinstance(model_or_folder, (str, Path)):
        return model_or_folder, tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(model_or_folder).expanduser()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, tokenizer or AutoTokenizer.from_pretrained(folder)


def check_loaded(peft_model: Any, tokenizer: Any, adapter_names: set[str] | None = None,
                 probe: str = DEFAULT_PROBE, tolerance: float = 1e-3,
                 reports: list[AdapterReport] | None = None) -> VerifyReport:
    """Check adapters already loaded in `peft_model` (the active ones vs `disable_adapter()`).

    `adapter_names` limits the ΔW check to those peft adapters (None: all loaded ones).
    """
    norms = {key: norm for key, norm in module_delta_norms(peft_model).items()
             if adapter_names is None or key.rsplit("[", 1)[-1].rstrip("]") in adapter_names}
    ids = tokenizer(probe, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        adapted = peft_model(input_ids=ids).logits.float()
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=ids).logits.float()
    diff = float((adapted - plain).abs().max())
    zero = sorted(name for name, norm in norms.items() if norm == 0.0)
    reasons = []
    if zero:
        reasons.append(f"{len(zero)} of {len(norms)} modules have ΔW = 0, e.g. {zero[:3]}")
    if not diff > tolerance:
        reasons.append(f"max |Δlogit| on the probe is {diff:.2e}, not above {tolerance:g}")
    modules = len(norms)
    if is_prompt_learning(peft_model):  # a prefix: its layers, not LoRA modules
        modules = sum(report.modules for report in reports or [])
    return VerifyReport(applied=not reasons, max_logit_diff=diff, modules=modules,
                        zero_modules=zero, reasons=reasons, adapters=list(reports or []))


def verify_adapter(model_folder_or_model: Any, tokenizer: Any, adapter_folders: list[Path],
                   probe: str = DEFAULT_PROBE, tolerance: float = 1e-3) -> VerifyReport:
    """Load the adapters strictly into the model and check they change it (see module doc).

    A model object is wrapped in place: after the call use the returned state only through
    a fresh load. `tokenizer` may be None when a folder is given.
    """
    model, tokenizer = _load(model_folder_or_model, tokenizer)
    peft_model, reports = load_adapters(model, [Path(f) for f in adapter_folders])
    return check_loaded(peft_model, tokenizer, probe=probe, tolerance=tolerance, reports=reports)
