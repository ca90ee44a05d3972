"""Reduced precision against fp32 on probe prompts, with the tolerances the README states.

bf16 (the default) must keep the next-token choice and stay within 1.0 logit of fp32; int8
dynamic quantization is allowed to move further (it is an opt-in speed/quality trade whose
CMRC cost the README reports) but must stay recognisably the same distribution.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kbqa.errors import AdapterError
from kbqa.llm import LocalLLM, is_int8
from kbqa.models import resolve_llm
from kbqa.variants import Variant, VariantModel

pytestmark = pytest.mark.slow
PROBES = ["已知信息：王处直，字允明，京兆万年人。问题：王处直的字是什么？答案：",
          "已知信息：[1]（faq.txt）公司班车每天早上7:40从地铁站发车。\n问题：班车几点发车？\n答案："]


@pytest.fixture(scope="module")
def fp32_folder(model_cache: Path) -> Path:
    return resolve_llm("embedded", model_cache, "float32")


def next_token_logits(llm: LocalLLM, prompt: str) -> torch.Tensor:
    ids = llm.tokenizer(llm.render(prompt), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return llm.model(ids["input_ids"]).logits[0, -1].float()


def test_bf16_and_int8_stay_within_their_tolerances_of_fp32(fp32_folder: Path):
    fp32 = LocalLLM.from_folder(fp32_folder, dtype="float32")
    reference = [next_token_logits(fp32, p) for p in PROBES]
    del fp32
    bf16 = LocalLLM.from_folder(fp32_folder, dtype="bfloat16")
    for prompt, ref in zip(PROBES, reference):
        got = next_token_logits(bf16, prompt)
        assert got.argmax() == ref.argmax()
        assert (got - ref).abs().max() <= 1.0
        assert torch.cosine_similarity(got, ref, dim=0) >= 0.999
    del bf16
    int8 = LocalLLM.from_folder(fp32_folder, dtype="int8")
    assert is_int8(int8.model)
    for prompt, ref in zip(PROBES, reference):
        got = next_token_logits(int8, prompt)
        assert torch.cosine_similarity(got, ref, dim=0) >= 0.85
        assert ref.argmax() in got.topk(10).indices


def test_int8_model_refuses_lora_adapters(tiny_llm_folder: Path):
    int8 = LocalLLM.from_folder(tiny_llm_folder, dtype="int8")
    adapter = Path(__file__).resolve().parents[1] / "adapters" / "smollm2-cmrc-donor"
    with pytest.raises(AdapterError, match="int8"):
        VariantModel(int8).prepare(Variant.of([adapter]))
