"""Model variants share one base model: adapters switch on and off without reloading it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kbqa.adapters.variants import Variant, VariantModel, discover_adapters
from kbqa.errors import AdapterError
from kbqa.llm.local import LocalLLM
from tests.ui_support import DONOR_ADAPTER, ROOT

PROBE = "The capital of France is"


def _logits(llm: LocalLLM) -> torch.Tensor:
    ids = llm.tokenizer(PROBE, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return llm.model(input_ids=ids).logits.float()


@pytest.fixture
def variants(tiny_llm_folder: Path) -> VariantModel:
    return VariantModel(LocalLLM.from_folder(tiny_llm_folder, dtype="float32", max_new_tokens=4))


def test_discover_lists_configured_then_folders(tmp_path: Path) -> None:
    found = discover_adapters([DONOR_ADAPTER, tmp_path / "missing"], [ROOT / "adapters", tmp_path])
    assert found[0] == DONOR_ADAPTER.resolve()
    assert len(found) == len(set(found)) >= 1


@pytest.mark.skipif(not DONOR_ADAPTER.is_dir(), reason="adapters/smollm2-cmrc-donor is missing")
def test_plain_and_adapter_share_the_base_model(variants: VariantModel) -> None:
    base = variants.base_model
    with variants.activate(Variant()) as llm:
        before = _logits(llm)
    adapter = Variant.of([DONOR_ADAPTER])
    with variants.activate(adapter) as llm:
        adapted = _logits(llm)
        assert llm.adapters == [str(DONOR_ADAPTER.resolve())]
    with variants.activate(Variant()) as llm:
        plain_again = _logits(llm)
    assert torch.allclose(before, plain_again, atol=1e-5)  # disable_adapter() = the plain model
    assert (adapted - before).abs().max() > 1e-3
    assert variants.peft_model.get_base_model() is base  # wrapped in place, never reloaded
    check = variants.check_applied(adapter)
    assert check.applied and check.max_logit_diff > 1e-3 and check.modules > 0
    assert not variants.check_applied(Variant()).applied


@pytest.mark.skipif(not (ROOT / "adapters" / "qwen0.5b-cmrc-direct").is_dir(),
                    reason="adapters/qwen0.5b-cmrc-direct is missing")
def test_an_adapter_that_does_not_fit_leaves_the_model_plain(variants: VariantModel) -> None:
    with variants.activate(Variant()) as llm:
        before = _logits(llm)
    with pytest.raises(AdapterError):
        variants.prepare(Variant.of([ROOT / "adapters" / "qwen0.5b-cmrc-direct"]))
    assert variants.peft_model is None
    with variants.activate(Variant()) as llm:
        assert torch.allclose(before, _logits(llm), atol=1e-5)
    assert not variants.lock.locked()


def test_adapter_fits_only_the_base_model_it_records(tmp_path: Path) -> None:
    import json

    from kbqa.adapters.variants import adapter_fits

    def adapter(name: str, base: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "base_model_name_or_path": base}), encoding="utf-8")
        return folder

    smol = adapter("smol", "embedded:smollm2-135m-instruct")
    converted = tmp_path / "models" / "smollm2-135m-instruct-float32"  # embedded_llm_folder's name
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}", encoding="utf-8")
    assert adapter_fits(smol, "embedded:smollm2-135m-instruct") is True
    assert adapter_fits(smol, str(converted)) is True
    assert adapter_fits(smol, "embedded") is False  # the default is Qwen2.5-Coder-0.5B's reader
    qwen = adapter("qwen", "embedded:qwen2.5-coder-0.5b-instruct")
    assert adapter_fits(qwen, "embedded:qwen2.5-coder-0.5b-instruct") is True
    assert adapter_fits(qwen, "embedded") is False  # the reader has a LoRA merged in already
    assert adapter_fits(adapter("reader", "embedded:qwen2.5-coder-0.5b-reader"), "embedded")
    assert adapter_fits(smol, "openai:http://127.0.0.1:8000/v1#plain") is False
    other = tmp_path / "other-model"
    other.mkdir()
    assert adapter_fits(adapter("local", str(other)), str(other)) is True
    assert adapter_fits(adapter("local2", str(other)), str(converted)) is False
    assert adapter_fits(adapter("hub", "Qwen/Qwen2.5-0.5B"), "embedded") is None  # cannot tell


@pytest.mark.skipif(not (ROOT / "adapters" / "qwen0.5b-cmrc-direct").is_dir(),
                    reason="adapters/qwen0.5b-cmrc-direct is missing")
def test_an_adapter_recorded_for_another_base_is_refused_by_name_before_loading(
        tiny_llm_folder: Path) -> None:
    variants = VariantModel(LocalLLM.from_folder(tiny_llm_folder, dtype="float32"),
                            base="embedded:smollm2-135m-instruct")
    with pytest.raises(AdapterError, match="--llm embedded:qwen2.5-coder-0.5b-instruct"):
        variants.prepare(Variant.of([ROOT / "adapters" / "qwen0.5b-cmrc-direct"]))
    assert variants.peft_model is None and not variants.names
