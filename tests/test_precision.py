"""Reduced precision against fp32 on probe prompts, with the tolerances the README states.

bf16 (the default) must keep the next-token choice and stay within 1.0 logit of fp32; int8
dynamic quantization is allowed to move further (it is an opt-in speed/quality trade whose
CMRC cost the README reports) but must stay recognisably the same distribution. int8 weight-only
quantization (int8 weights, bf16 activations) must meet bf16's tolerances.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kbqa.errors import AdapterError
from kbqa.llm.local import LocalLLM
from kbqa.llm.loading import PLAIN_DEFAULT_LLM, resolve_llm
from kbqa.llm.quantization import INT8PACK_MAX_ROWS, Int8WeightLinear, is_quantized
from kbqa.adapters.variants import Variant, VariantModel

pytestmark = [pytest.mark.slow, pytest.mark.numerics]
PROBES = ["已知信息：王处直，字允明，京兆万年人。问题：王处直的字是什么？答案：",
          "已知信息：[1]（faq.txt）公司班车每天早上7:40从地铁站发车。\n问题：班车几点发车？\n答案："]


@pytest.fixture(scope="module")
def fp32_folder(model_cache: Path) -> Path:
    return resolve_llm("embedded", model_cache, "float32")


@pytest.fixture(scope="module")
def fp32_logits(fp32_folder: Path) -> list[torch.Tensor]:
    """The default model's fp32 next-token logits on each probe: the reference."""
    fp32 = LocalLLM.from_folder(fp32_folder, dtype="float32")
    return [next_token_logits(fp32, p) for p in PROBES]


def next_token_logits(llm: LocalLLM, prompt: str) -> torch.Tensor:
    ids = llm.tokenizer(llm.render(prompt), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return llm.model(ids["input_ids"]).logits[0, -1].float()


def test_bf16_stays_within_its_tolerances_of_fp32(fp32_folder: Path,
                                                 fp32_logits: list[torch.Tensor]):
    bf16 = LocalLLM.from_folder(fp32_folder, dtype="bfloat16")
    for prompt, ref in zip(PROBES, fp32_logits):
        got = next_token_logits(bf16, prompt)
        assert got.argmax() == ref.argmax()
        assert (got - ref).abs().max() <= 1.0
        assert torch.cosine_similarity(got, ref, dim=0) >= 0.999


def test_int8_stays_recognisably_the_plain_models_distribution(model_cache: Path):
    # On the plain base, where int8's CMRC cost was measured (docs/benchmarks.md §6). The
    # default reader under dynamic int8 keeps the cosine (0.951 / 0.918) but its fp32 top-1 on
    # the second probe falls to rank 18 (plain: rank 3): §6 says so, and int8 stays opt-in.
    folder = resolve_llm(f"embedded:{PLAIN_DEFAULT_LLM}", model_cache, "float32")
    fp32 = LocalLLM.from_folder(folder, dtype="float32")
    refs = [next_token_logits(fp32, p) for p in PROBES]
    del fp32
    int8 = LocalLLM.from_folder(folder, dtype="int8")
    assert is_quantized(int8.model)
    for prompt, ref in zip(PROBES, refs):
        got = next_token_logits(int8, prompt)
        assert torch.cosine_similarity(got, ref, dim=0) >= 0.85
        assert ref.argmax() in got.topk(10).indices


def test_int8_weights_stay_within_bf16_tolerances_of_fp32(model_cache: Path,
                                                          fp32_logits: list[torch.Tensor]):
    # Measured: cosine 0.99981 / 0.99967, max |logit diff| 0.44 / 0.56, same top-1 on both
    # probes. Dynamic int8 fails all three: cosine 0.958 / 0.916, max diff 9.5 / 9.3, and the
    # second probe's top-1 moves to rank 4.
    folder = resolve_llm("embedded", model_cache, "int8-weights")
    assert folder.name.endswith("-bfloat16")  # quantized after loading the bf16 conversion
    llm = LocalLLM.from_folder(folder, dtype="int8-weights")
    assert is_quantized(llm.model)
    assert not any(isinstance(m, torch.nn.Linear) for m in llm.model.modules())
    for prompt, ref in zip(PROBES, fp32_logits):
        got = next_token_logits(llm, prompt)
        assert got.argmax() == ref.argmax()
        assert (got - ref).abs().max() <= 1.0
        assert torch.cosine_similarity(got, ref, dim=0) >= 0.999


def test_int8_weight_linear_paths_agree_and_dispatch_on_rows():
    torch.manual_seed(0)
    layer = Int8WeightLinear(torch.nn.Linear(256, 384).to(torch.bfloat16))
    x = torch.randn(INT8PACK_MAX_ROWS + 1, 256, dtype=torch.bfloat16)
    with torch.inference_mode():
        packed, dequantized = layer.matmul_int8(x), layer.matmul_dequantized(x)
        # the two differ only by bf16 rounding: measured 0.7 % of the largest output
        assert (packed - dequantized).abs().max() <= 0.02 * dequantized.abs().max()
        assert torch.equal(layer(x[None, :1]), packed[None, :1])  # decoding: int8pack
        assert torch.equal(layer(x[None]), dequantized[None])  # prefill: dequantized


def test_int8_weight_linear_avoids_int8pack_where_the_kernel_breaks():
    # torch's int8pack kernel segfaults when in_features is not a multiple of 16
    torch.manual_seed(0)
    layer = Int8WeightLinear(torch.nn.Linear(100, 8).to(torch.bfloat16))
    x = torch.randn(1, 100, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(layer(x), layer.matmul_dequantized(x))


def test_int8_weights_keep_a_tied_embedding_and_generate(tiny_llm_folder: Path):
    llm = LocalLLM.from_folder(tiny_llm_folder, dtype="int8-weights", max_new_tokens=8)
    model = llm.model
    assert model.config.tie_word_embeddings
    assert isinstance(model.get_output_embeddings(), Int8WeightLinear)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert llm.invoke("What is the capital of France?").strip()


@pytest.mark.parametrize("dtype", ["int8", "int8-weights"])
def test_quantized_model_refuses_lora_adapters(tiny_llm_folder: Path, dtype: str):
    quantized = LocalLLM.from_folder(tiny_llm_folder, dtype=dtype)
    adapter = Path(__file__).resolve().parents[1] / "adapters" / "smollm2-cmrc-donor"
    with pytest.raises(AdapterError, match="int8-quantized.*no LoRA adapter"):
        VariantModel(quantized).prepare(Variant.of([adapter]))
