"""kbqa.llm.cpu_inference changes speed only: packed weights, folded single-query attention and the
growing cache must give what the stock transformers path gives, on a real model (SmolLM2-135M,
llama architecture with 9 query heads over 3 key/value heads) and on hand-made tensors.

What is exact, and why (holds on any CPU):
* the growing cache stores and returns the same tensors as transformers' cache (copies only);
* unpacking returns the weight's own bits (a reorder is a permutation of the same values);
* an adapter on an unpacked model runs the same kernel on the same bits as on a never-packed one.
What is not exact: a packed weight is multiplied by another oneDNN kernel than F.linear's, which
may sum in another order (AMX does; so does AVX-512 without BF16, `ONEDNN_MAX_CPU_ISA=AVX512_CORE`).
Those outputs are held to the rounding bounds of tests/numerics.py, derived from the dtype and
the reduction length; whole-model logits, where no closed bound is practical, are held to the
error bfloat16 itself makes against float32 on the same model and prompt (RMS over ~10^6 logits):
the fast path may round differently, not worse.
CI runs this file again under emulated ISAs (AVX-512 without BF16, AVX2) to show these hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import DynamicCache

from kbqa.llm.cpu_inference import (ATTENTION, GrowingLayer, PackedLinear, growing_cache,
                                grouped_query_attention, pack_linear_weights, packing_supported,
                                unpack_linear_weights)
from kbqa.adapters import load_adapters
from kbqa.llm.local import LocalLLM
from tests.numerics import attention_error_bound, exact_linear, linear_error_bound

pytestmark = pytest.mark.numerics
needs_packing = pytest.mark.skipif(
    not packing_supported(), reason="oneDNN cannot pack bf16 weights on this CPU (needs "
    "AVX-512 BW/VL/DQ or AVX-NE-CONVERT); the plain layout is what runs here")

PROMPT = "请用一句话介绍长城。"


@pytest.fixture(scope="module")
def stock(tiny_llm_folder: Path) -> LocalLLM:
    return LocalLLM.from_folder(tiny_llm_folder, dtype="bfloat16", cpu_speedups=False,
                                max_new_tokens=16, prefix_cache=None)


@pytest.fixture(scope="module")
def fast(tiny_llm_folder: Path) -> LocalLLM:
    return LocalLLM.from_folder(tiny_llm_folder, dtype="bfloat16", max_new_tokens=16,
                                prefix_cache=None)


def _ids(llm: LocalLLM, text: str = PROMPT) -> torch.Tensor:
    return llm.tokenizer(llm.render(text), return_tensors="pt",
                         add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def reference(tiny_llm_folder: Path) -> LocalLLM:
    """The same model in float32 through transformers' own path: what bf16 is measured against."""
    return LocalLLM.from_folder(tiny_llm_folder, dtype="float32", cpu_speedups=False,
                                prefix_cache=None)


def _step_logits(llm: LocalLLM, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy tokens and the logits of every step, as generate() computes them."""
    generation, _ = llm._generation_kwargs(PROMPT, None, max_new_tokens=steps)
    with torch.inference_mode():
        out = llm.model.generate(**generation, min_new_tokens=steps, output_logits=True,
                                 return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits)[:, 0].float()


def _forced_logits(llm: LocalLLM, sequence: torch.Tensor, steps: int) -> torch.Tensor:
    """The logits that predict the last `steps` tokens of `sequence`, in one forward pass."""
    with torch.inference_mode():
        return llm.model(sequence).logits[0, -steps - 1:-1].float()


def test_speed_ups_are_applied_to_a_native_bf16_model(fast: LocalLLM, stock: LocalLLM) -> None:
    linears = sum(isinstance(m, nn.Linear) for m in stock.model.modules())
    packed = sum(isinstance(m, PackedLinear) for m in fast.model.modules())
    assert linears == 211
    assert packed == (211 if packing_supported() else 0)
    assert fast.model.config._attn_implementation == ATTENTION
    assert stock.model.config._attn_implementation == "sdpa"


def _rms(difference: torch.Tensor) -> float:
    return float(difference.pow(2).mean().sqrt())


def _independent(first: float, second: float) -> float:
    """The RMS of the difference of two errors of these sizes that are not anti-correlated:
    what two bf16 paths rounding independently differ by, at most."""
    return (first ** 2 + second ** 2) ** 0.5


def test_prompt_logits_stay_within_bf16s_own_error(fast: LocalLLM, stock: LocalLLM,
                                                   reference: LocalLLM) -> None:
    """Packed weights (where oneDNN packs) change which bf16 roundings happen, not how many: the
    fast path is as far from float32 as the stock path (RMS over every logit of the prompt,
    ~10^6 values, within 25%), and the two differ from each other by no more than two
    independent bf16 roundings would."""
    ids = _ids(stock)
    with torch.inference_mode():
        got, want = fast.model(ids).logits[0].float(), stock.model(ids).logits[0].float()
        ref = reference.model(ids).logits[0].float()
    bf16_error, fast_error = _rms(want - ref), _rms(got - ref)
    assert bf16_error > 0  # the reference is float32 and the model bf16: they must differ
    assert fast_error <= 1.25 * bf16_error
    assert _rms(got - want) <= _independent(fast_error, bf16_error)


def test_decoding_gives_the_stock_tokens_and_logits(fast: LocalLLM, stock: LocalLLM,
                                                    reference: LocalLLM) -> None:
    """Greedy decoding through every speed-up (packed weights, folded attention, growing cache):
    each step's logits are as far from float32's (on the same tokens) as the stock path's, and
    while both have picked the same tokens, they differ by no more than two independent bf16
    roundings would (a later near-tie may send them apart: either token is then bf16-correct)."""
    steps = 12
    tokens, logits = _step_logits(fast, steps)
    stock_tokens, stock_logits = _step_logits(stock, steps)
    fast_error = logits - _forced_logits(reference, tokens, steps)
    stock_error = stock_logits - _forced_logits(reference, stock_tokens, steps)
    assert _rms(stock_error) > 0
    assert _rms(fast_error) <= 1.25 * _rms(stock_error)
    new, stock_new = tokens[0, -steps:], stock_tokens[0, -steps:]
    agreed = int((new != stock_new).long().argmax()) if (new != stock_new).any() else steps
    if agreed:
        assert _rms(logits[:agreed] - stock_logits[:agreed]) <= _independent(
            _rms(fast_error[:agreed]), _rms(stock_error[:agreed]))


def test_decoding_in_float32_matches_to_rounding(tiny_llm: LocalLLM, reference: LocalLLM,
                                                  stock: LocalLLM) -> None:
    """In float32 the folded attention's difference is rounding, not a changed computation: it
    moves the logits far less than bf16 does (16 fewer significand bits)."""
    assert tiny_llm.model.config._attn_implementation == ATTENTION
    tokens, logits = _step_logits(tiny_llm)
    stock_tokens, stock_logits = _step_logits(reference)
    assert torch.equal(tokens, stock_tokens)
    bf16_logits = _forced_logits(stock, stock_tokens, 12)
    bf16_error = (bf16_logits - stock_logits).abs().max()
    assert (logits - stock_logits).abs().max() <= bf16_error * 2.0 ** -8


@needs_packing
def test_unpacking_restores_every_weight_bit_for_bit(tiny_llm_folder: Path,
                                                     stock: LocalLLM) -> None:
    model = LocalLLM.from_folder(tiny_llm_folder, dtype="bfloat16").model
    assert unpack_linear_weights(model) == 211
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    expected = stock.model.state_dict()
    restored = model.state_dict()
    assert restored.keys() == expected.keys()
    assert all(torch.equal(restored[name], expected[name]) for name in expected)


@needs_packing
def test_adapters_attach_to_a_packed_model(tiny_llm_folder: Path, tmp_path: Path,
                                           stock: LocalLLM) -> None:
    """load_adapters unpacks first; the adapter then acts as on a model never packed (exact: the
    same kernel on the same bits)."""
    torch.manual_seed(0)
    donor = get_peft_model(LocalLLM.from_folder(tiny_llm_folder, dtype="bfloat16",
                                                cpu_speedups=False).model,
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, parameter in donor.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.02)
    donor.save_pretrained(tmp_path / "adapter")
    packed = LocalLLM.from_folder(tiny_llm_folder, dtype="bfloat16").model
    peft_model, reports = load_adapters(packed, [tmp_path / "adapter"])
    assert reports[0].modules == 60
    assert not any(isinstance(m, PackedLinear) for m in peft_model.modules())
    ids = _ids(stock)
    with torch.inference_mode():
        assert torch.equal(peft_model(ids).logits, donor(ids).logits)


def test_pack_leaves_non_bf16_models_alone(tiny_llm: LocalLLM) -> None:
    """The float32 fixture model: only bf16 weights are packed."""
    assert pack_linear_weights(tiny_llm.model) == 0
    assert not any(isinstance(m, PackedLinear) for m in tiny_llm.model.modules())


@needs_packing
@pytest.mark.parametrize("rows", [1, 3, 40, 300])
@pytest.mark.parametrize("shape", [(64, 40), (576, 1536), (576, 4096)])
def test_packed_linear_is_within_the_rounding_bound(shape: tuple[int, int], rows: int) -> None:
    """Packed and plain both stay within bf16's bound of the exact product (tests/numerics.py);
    the row counts cover oneDNN's one-row (decode) and blocked (prompt) kernels."""
    inputs, outputs = shape
    generator = torch.Generator().manual_seed(rows)
    linear = nn.Linear(inputs, outputs, dtype=torch.bfloat16).requires_grad_(False)
    linear.weight.copy_(torch.randn(outputs, inputs, generator=generator) / inputs ** 0.5)
    x = torch.randn(rows, inputs, generator=generator).bfloat16()
    exact = exact_linear(x, linear.weight, linear.bias)
    bound = linear_error_bound(x, linear.weight, linear.bias, torch.bfloat16)
    for got in (PackedLinear(linear)(x), linear(x)):
        assert got.dtype == torch.bfloat16
        assert ((got.double() - exact).abs() <= bound).all()


@needs_packing
def test_packed_linear_handles_bias_and_batched_inputs() -> None:
    generator = torch.Generator().manual_seed(1)
    linear = nn.Linear(64, 40, dtype=torch.bfloat16).requires_grad_(False)
    linear.weight.copy_(torch.randn(40, 64, generator=generator))
    x = torch.randn(2, 5, 64, generator=generator).bfloat16()
    packed = PackedLinear(linear)
    got = packed(x)
    assert got.shape == (2, 5, 40)
    bound = linear_error_bound(x.reshape(10, 64), linear.weight, linear.bias, torch.bfloat16)
    exact = exact_linear(x.reshape(10, 64), linear.weight, linear.bias)
    assert ((got.reshape(10, 40).double() - exact).abs() <= bound).all()
    assert torch.equal(packed.unpack().weight, linear.weight)  # exact: a reorder and back
    assert torch.equal(packed.unpack().bias, linear.bias)


class _Module(nn.Module):
    num_key_value_groups = 4
    is_causal = True
    training = False


@pytest.mark.parametrize("length", [1, 5])
def test_folded_attention_matches_sdpa_with_grouped_heads(length: int) -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    generator = torch.Generator().manual_seed(2)
    query = torch.randn(1, 8, length, 16, generator=generator)
    key, value = (torch.randn(1, 2, 30, 16, generator=generator) for _ in range(2))
    module = _Module()
    got, _ = grouped_query_attention(module, query, key, value, None, scaling=0.25)
    want, _ = sdpa_attention_forward(module, query, key, value, None, scaling=0.25)
    assert got.shape == want.shape == (1, length, 8, 16)
    # the two kernels each stay within float32's bound of the exact attention
    bound = 2 * attention_error_bound(query, key, value, 0.25, torch.float32)
    assert (got - want).abs().max() <= bound


def test_folded_attention_leaves_masked_queries_to_sdpa() -> None:
    generator = torch.Generator().manual_seed(3)
    query = torch.randn(1, 8, 1, 16, generator=generator)
    key, value = (torch.randn(1, 2, 30, 16, generator=generator) for _ in range(2))
    mask = torch.ones(1, 1, 1, 30, dtype=torch.bool)
    mask[..., 10:] = False
    got, _ = grouped_query_attention(_Module(), query, key, value, mask, scaling=0.25)
    expected = F.scaled_dot_product_attention(query, key[:, :, :10].repeat_interleave(4, 1),
                                              value[:, :, :10].repeat_interleave(4, 1),
                                              scale=0.25).transpose(1, 2)
    bound = 2 * attention_error_bound(query, key[:, :, :10], value[:, :, :10], 0.25, torch.float32)
    assert (got - expected).abs().max() <= bound


def test_growing_layer_holds_what_concatenation_would() -> None:
    """Prompt, decode steps, a crop (the prefix cache's reuse) and growth past the spare room."""
    generator = torch.Generator().manual_seed(4)
    growing, plain = GrowingLayer(), DynamicCache()  # one layer each
    for length in [7, 1, 1, 1]:
        k, v = (torch.randn(1, 2, length, 4, generator=generator) for _ in range(2))
        keys, values = growing.update(k, v)
        want_k, want_v = plain.update(k, v, 0)
        assert torch.equal(keys, want_k) and torch.equal(values, want_v)
    buffer = growing.keys.data_ptr()
    growing.crop(-5)  # keep 5 of 10
    plain.crop(-5)
    for length in [3, 400, 1]:  # the 400-token update outgrows the spare room
        k, v = (torch.randn(1, 2, length, 4, generator=generator) for _ in range(2))
        keys, values = growing.update(k, v)
        want_k, want_v = plain.update(k, v, 0)
        assert torch.equal(keys, want_k) and torch.equal(values, want_v)
        if length == 3:
            assert growing.keys.data_ptr() == buffer  # written in place after the crop
    assert growing.get_seq_length() == plain.get_seq_length() == 409


def test_growing_cache_replaces_only_full_attention_layers(stock: LocalLLM) -> None:
    cache = growing_cache(stock.model.config)
    assert len(cache.layers) == stock.model.config.num_hidden_layers
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
