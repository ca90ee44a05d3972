"""Precision transforms applied to a loaded model: dynamic int8 and int8 weight-only.

Both replace every nn.Linear with a layer peft cannot wrap, so a quantized model takes no LoRA
adapters: `refuse_adapters` is the check every adapter path runs first.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kbqa.errors import AdapterError

# Rows (tokens in the call) up to which Int8WeightLinear multiplies by the int8 weights directly.
# torch's int8pack kernel costs about the same per row as a bf16 matrix-vector product, while
# dequantizing first costs a fixed weight pass and then runs at bf16 GEMM speed, so the int8
# kernel wins for a few rows and loses beyond this (crossover timed on one MLP layer:
# docs/benchmarks.md §int8 and int8-weights). Decoding sends 1 row per step; prefill sends the
# prompt, hundreds of rows.
INT8PACK_MAX_ROWS = 16
# torch's CPU int8pack kernel (2.13, AVX-512) needs in_features to be a multiple of 16: at 16, 32,
# 48, 80, 112, 576, 896, 1536 and 4864 it is exact, at 8, 20, 24, 40 and 100 it segfaults or
# returns garbage. Other layers always take the dequantized path.
INT8PACK_IN_MULTIPLE = 16


class Int8WeightLinear(nn.Module):
    """An nn.Linear holding symmetric per-output-channel int8 weights, computing in bf16.

    Decoding one token reads every weight once, so int8 weights (half the bytes of bf16) decode
    faster; activations stay bf16, which keeps answers close to bf16, unlike `quantize_int8`,
    which also quantizes activations.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.int8pack_fits = self.in_features % INT8PACK_IN_MULTIPLE == 0
        weight = linear.weight.detach().float()
        # scales rounded to bf16 before quantizing, so int8 * scale reproduces what was rounded
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.bfloat16).tiny)
        scales = scales.to(torch.bfloat16)
        quantized = torch.round(weight / scales.float()[:, None]).clamp(-127, 127)
        self.register_buffer("weight_int8", quantized.to(torch.int8).contiguous())
        self.register_buffer("scales", scales)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.int8pack_fits and flat.shape[0] <= INT8PACK_MAX_ROWS:
            out = self.matmul_int8(flat)
        else:
            out = self.matmul_dequantized(flat)
        return out.reshape(*x.shape[:-1], self.out_features)

    def matmul_int8(self, x: torch.Tensor) -> torch.Tensor:
        """x (rows, in) @ weights: torch's int8pack kernel; fast for a few rows. Only when
        `int8pack_fits`."""
        out = torch._weight_int8pack_mm(x.contiguous(), self.weight_int8, self.scales)
        return out if self.bias is None else out + self.bias

    def matmul_dequantized(self, x: torch.Tensor) -> torch.Tensor:
        """x (rows, in) @ weights: a bf16 GEMM with the int8 values (exact in bf16), scaled per
        output channel afterwards, which is half the work of scaling the weights first; fast
        for many rows."""
        out = F.linear(x, self.weight_int8.to(torch.bfloat16)) * self.scales
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


def quantize_int8_weights(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of a bfloat16 model, lm_head included, by an Int8WeightLinear.

    A tied lm_head shares its weight with the input embedding: the lm_head gets its own int8
    copy and the embedding stays bf16 (a lookup reads one row per token; int8 would save
    nothing there). Modifies `model` in place and returns it.
    """
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in linears:
        if linear.weight.dtype != torch.bfloat16:
            raise ValueError(f"int8 weight-only quantization needs bfloat16 weights; {name} "
                             f"is {linear.weight.dtype}")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, Int8WeightLinear(linear))
    return model


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized per
    batch): faster decoding on CPU than bf16, at a cost in answer quality (docs/benchmarks.md
    §int8 and int8-weights)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks torch.ao deprecated; torch is pinned
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def is_quantized(model: Any) -> bool:
    """Whether `quantize_int8` or `quantize_int8_weights` was applied."""
    kinds = (torch.ao.nn.quantized.dynamic.Linear, Int8WeightLinear)
    return any(isinstance(m, kinds) for m in model.modules())


def refuse_adapters(model: Any, adapter: Path) -> None:
    """AdapterError if `model` is quantized: peft cannot wrap its Linear layers."""
    if is_quantized(model):
        raise AdapterError(f"cannot apply {adapter.name}: the model is int8-quantized, whose "
                           "Linear layers take no LoRA adapter; use llm_dtype bfloat16 or "
                           "float32 with adapters")
