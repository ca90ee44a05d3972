"""CPU speed-ups for a loaded transformers model: the same computation, less time per token.

Decoding one token on CPU should be bound by reading the weights once, but a profiled stock bf16
decode step spent its time elsewhere, in three places this module removes (figures in
docs/benchmarks.md §Generation speed and the CPU speed-ups):

* **Linear layers.** `F.linear` on bf16 weights in their plain layout streams a one-row product
  well below memory bandwidth; the same weights reordered once into oneDNN's blocked layout
  stream much faster (`PackedLinear`). The reorder itself is exact (the same values, unpacked
  bit for bit), but the packed weight is multiplied by another oneDNN kernel than F.linear's,
  which may sum in another order: on AVX-512 with BF16 the outputs are the same bits, on AMX
  and on AVX-512 without BF16 they differ within bf16 rounding (tests/test_cpu_inference.py
  states the bounds). Where oneDNN cannot pack bf16 (AVX2 only) the plain layout runs. peft
  cannot wrap a packed layer, so `kbqa.adapters.load_adapters` unpacks
  (`unpack_linear_weights`, exact) before attaching.
* **Attention of one query.** With grouped-query attention and no mask, transformers calls
  SDPA with `enable_gqa=True`, for which torch's CPU kernel is slow. Folding the query heads
  onto their key/value heads (14 heads -> 2 x 7 queries) gives the same arithmetic in a
  fraction of the time (`grouped_query_attention`, registered as the "kbqa_sdpa" attention
  implementation; everything else goes to transformers' own SDPA path).
* **The key/value cache.** `DynamicLayer` concatenates the whole cache with each new token,
  reallocating it every step; `GrowingLayer` keeps spare capacity and writes in place.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

ATTENTION = "kbqa_sdpa"
# Tokens a GrowingLayer reserves beyond what it holds when it must grow: a short answer never
# reallocates, and a long prompt at most doubles its cache.
_SPARE_TOKENS = 256


class PackedLinear(nn.Module):
    """An nn.Linear whose bfloat16 weight is stored in oneDNN's blocked layout (see module doc)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def unpack(self) -> nn.Linear:
        """The plain nn.Linear back, bit for bit."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device="meta", dtype=torch.bfloat16)
        linear.weight = nn.Parameter(self.packed.to_dense(), requires_grad=False)
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias, requires_grad=False)
        return linear

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, layout=onednn-blocked")


@functools.cache
def packing_supported() -> bool:
    """oneDNN packs bf16 weights on this CPU (it needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT) and a
    probe product stays within bf16 rounding of F.linear's (checked once; a build where it
    did not would keep the plain layout)."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(32, 48, device="meta")  # no draw from the global random generator
    linear.weight = nn.Parameter(torch.randn(48, 32, generator=generator).bfloat16(), False)
    linear.bias = nn.Parameter(torch.randn(48, generator=generator).bfloat16(), False)
    x = torch.randn(3, 32, generator=generator).bfloat16()
    try:
        packed = PackedLinear(linear)(x).double()
    except (RuntimeError, AttributeError):
        return False
    # both kernels sum 32 exact float32 products and round once to bf16 (unit roundoff 2^-8):
    # each is within 2^-8 |y| + gamma_33 sum|x w| of the exact value (gamma_33 < 2 * 33 * 2^-24),
    # so the two are within twice that of each other (tests/numerics.py derives the bound)
    magnitude = x.double().abs() @ linear.weight.double().abs().T + linear.bias.double().abs()
    plain = linear(x).double()
    bound = 2 * (2.0 ** -8 * plain.abs() + 2 * 33 * 2.0 ** -24 * magnitude)
    return bool(((packed - plain).abs() <= bound).all())


def _replace(model: nn.Module, kind: type, make: Any) -> int:
    found = [(name, module) for name, module in model.named_modules() if type(module) is kind]
    for name, module in found:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, make(module))
    return len(found)


def pack_linear_weights(model: nn.Module) -> int:
    """Repack every bfloat16 nn.Linear in place; returns how many. A tied lm_head gets its own
    packed copy (the input embedding keeps the plain table for its row lookups)."""
    if any(type(m) is nn.Linear and m.weight.dtype != torch.bfloat16 for m in model.modules()):
        return 0
    with torch.no_grad():
        packed = _replace(model, nn.Linear, PackedLinear)
        _own_remaining_tensors(model)
    return packed


def _own_remaining_tensors(model: nn.Module) -> None:
    """Copy the parameters and buffers left plain (embedding, norms) into the process's own
    memory. transformers maps the safetensors file and its tensors read from that mapping; once
    the Linear weights have packed copies, these are what keeps the whole file mapped and
    resident (docs/benchmarks.md §Generation speed and the CPU speed-ups, Packed weights)."""
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None:
                module._parameters[name] = nn.Parameter(parameter.detach().clone(),
                                                        requires_grad=parameter.requires_grad)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = buffer.clone()


def unpack_linear_weights(model: nn.Module) -> int:
    """Undo `pack_linear_weights` in place (adapters attach to plain nn.Linear); returns how many."""
    return _replace(model, PackedLinear, PackedLinear.unpack)


def grouped_query_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor, attention_mask: torch.Tensor | None,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
    """One unmasked query with grouped key/value heads: fold the query heads of each key/value
    head into a (heads / kv_heads)-row query, one SDPA call without `enable_gqa`. Anything
    else (prompts, masks, sinks) is transformers' SDPA attention unchanged."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    if (length != 1 or attention_mask is not None or kv_heads == heads
            or kwargs.get("s_aux") is not None or kwargs.get("dropout", 0.0)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    folded = query.view(batch, kv_heads, heads // kv_heads, dim)
    out = F.scaled_dot_product_attention(folded, key, value, scale=kwargs.get("scaling"))
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def use_grouped_query_attention(model: Any) -> bool:
    """Switch a transformers-native SDPA model to `grouped_query_attention`; False if the model
    does not use SDPA through transformers' attention interface (remote code, eager, flex)."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" \
            or not hasattr(model, "set_attn_implementation"):
        return False
    AttentionInterface.register(ATTENTION, grouped_query_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)  # masks exactly as for SDPA
    model.set_attn_implementation(ATTENTION)
    return True


def growing_cache(config: Any) -> DynamicCache:
    """A transformers DynamicCache for `config` whose full-attention layers grow in place."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


class GrowingLayer(DynamicLayer):
    """A DynamicLayer that writes new positions into spare capacity instead of concatenating;
    `keys`/`values` are views of the first positions of its buffers."""

    _room: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held, new = self.get_seq_length(), key_states.shape[-2]
        if not self._has_room(key_states, held + new):
            self._grow(key_states, value_states, held, held + new + _SPARE_TOKENS)
        keys, values = self._room
        keys[..., held:held + new, :] = key_states
        values[..., held:held + new, :] = value_states
        self.keys, self.values = keys[..., :held + new, :], values[..., :held + new, :]
        return self.keys, self.values

    def _has_room(self, like: torch.Tensor, needed: int) -> bool:
        """Whether keys/values are still prefixes of the buffers (crop keeps them so; anything
        that replaced them does not) and the buffers hold `needed` positions."""
        if self._room is None or self.keys.numel() == 0:
            return False
        keys, values = self._room
        return (keys.shape[-2] >= needed and keys.shape[:2] == like.shape[:2]
                and self.keys.data_ptr() == keys.data_ptr()
                and self.values.data_ptr() == values.data_ptr())

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, held: int,
              capacity: int) -> None:
        buffers = []
        for old, new in ((self.keys, key_states), (self.values, value_states)):
            batch, heads, _, dim = new.shape
            buffer = new.new_empty(batch, heads, capacity, dim)
            if held:
                buffer[..., :held, :] = old
            buffers.append(buffer)
        self._room = (buffers[0], buffers[1])


def is_transformers_native(model: Any) -> bool:
    """A model class from transformers itself (remote-code models such as ChatGLM-6B read their
    layers' weights directly and keep their own caches, so they are left alone)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__module__.startswith("transformers.models.")


def speed_up(model: Any) -> None:
    """Apply what fits a transformers-native `model`, in place (see the module doc). The cache
    is exact; packed weights and the folded attention compute the same thing but may round
    bf16 in another order (tests/test_cpu_inference.py states the bounds)."""
    if not is_transformers_native(model):
        return
    if packing_supported():
        pack_linear_weights(model)
    use_grouped_query_attention(model)
