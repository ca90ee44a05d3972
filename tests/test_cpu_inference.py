"""kbqa.cpu_inference changes speed only: packed weights, folded single-query attention and the
growing cache must give what the stock transformers path gives, on a real model (SmolLM2-135M,
llama architecture with 9 query heads over 3 key/value heads) and on hand-made tensors.

Tolerances: packing and the cache are bit-exact; the folded attention runs the same arithmetic
through another SDPA kernel, so it is compared at float rounding: 1e-6 on tensors and 1e-3 on
logits in float32; in bfloat16 the same greedy tokens and logits within 1.0, the tolerance
bf16 itself is held to against float32 (tests/test_precision.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import DynamicCache

from kbqa.cpu_inference import (ATTENTION, GrowingLayer, PackedLinear, growing_cache,
                                grouped_query_attention, pack_linear_weights, packing_supported,
                                unpack_linear_weights)
from kbqa.fusion import load_adapters
from kbqa.llm import LocalLLM

pytestmark = pytest.mark.skipif(not packing_supported(), reason="oneDNN packing unavailable")

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


def _step_logits(llm: LocalLLM, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy tokens and the logits of every step, as generate() computes them."""
    generation, _ = llm._generation_kwargs(PROMPT, None, max_new_tokens=steps)
    with torch.inference_mode():
        out = llm.model.generate(**generation, min_new_tokens=steps, output_logits=True,
                                 return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits)


def test_speed_ups_are_applied_to_a_native_bf16_model(fast: LocalLLM, stock: LocalLLM) -> None:
    packed = [m for m in fast.model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == sum(isinstance(m, nn.Linear) for m in stock.model.modules()) == 211
    assert fast.model.config._attn_implementation == ATTENTION
    assert stock.model.config._attn_implementation == "sdpa"


def test_prompt_logits_are_bit_identical_with_packed_weights(fast: LocalLLM,
                                                             stock: LocalLLM) -> None:
    ids = _ids(stock)
    with torch.inference_mode():
        assert torch.equal(fast.model(ids).logits, stock.model(ids).logits)


def test_decoding_gives_the_stock_tokens_and_logits(fast: LocalLLM, stock: LocalLLM) -> None:
    tokens, logits = _step_logits(fast)
    stock_tokens, stock_logits = _step_logits(stock)
    assert torch.equal(tokens, stock_tokens)
    # another SDPA kernel rounds bf16 in another order; bf16 itself is held to 1.0 of fp32
    assert (logits.float() - stock_logits.float()).abs().max() <= 1.0
    assert fast.invoke(PROMPT) == stock.invoke(PROMPT)


def test_decoding_in_float32_matches_to_rounding(tiny_llm_folder: Path, tiny_llm: LocalLLM) -> None:
    """In float32 the folded attention's difference is rounding, not a changed computation."""
    stock32 = LocalLLM.from_folder(tiny_llm_folder, dtype="float32", cpu_speedups=False,
                                   prefix_cache=None)
    assert tiny_llm.model.config._attn_implementation == ATTENTION
    tokens, logits = _step_logits(tiny_llm)
    stock_tokens, stock_logits = _step_logits(stock32)
    assert torch.equal(tokens, stock_tokens)
    assert (logits - stock_logits).abs().max() <= 1e-3


def test_unpacking_restores_every_weight_bit_for_bit(tiny_llm_folder: Path,
                                                     stock: LocalLLM) -> None:
    model = LocalLLM.from_folder(tiny_llm_folder, dtype="bfloat16").model
    assert unpack_linear_weights(model) == 211
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    expected = stock.model.state_dict()
    restored = model.state_dict()
    assert restored.keys() == expected.keys()
    assert all(torch.equal(restored[name], expected[name]) for name in expected)


def test_adapters_attach_to_a_packed_model(tiny_llm_folder: Path, tmp_path: Path,
                                           stock: LocalLLM) -> None:
    """load_adapters unpacks first; the adapter then acts as on a model never packed."""
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


def test_packed_linear_handles_bias_and_batched_inputs() -> None:
    generator = torch.Generator().manual_seed(1)
    linear = nn.Linear(64, 40, dtype=torch.bfloat16).requires_grad_(False)
    linear.weight.copy_(torch.randn(40, 64, generator=generator))
    x = torch.randn(2, 5, 64, generator=generator).bfloat16()
    packed = PackedLinear(linear)
    assert torch.equal(packed(x), linear(x))
    assert torch.equal(packed.unpack().weight, linear.weight)
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
    assert torch.allclose(got, want, atol=1e-6)


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
    assert torch.allclose(got, expected, atol=1e-6)


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
