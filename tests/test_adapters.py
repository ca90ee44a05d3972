"""Strict LoRA loading on a real tiny model: what does not fit is refused, what loads changes logits."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from kbqa.errors import AdapterError
from kbqa.adapters import load_adapters


def _model(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


@pytest.fixture(scope="module")
def adapters(tiny_llm_folder: Path, tmp_path_factory) -> dict[str, Path]:
    """A trained-looking adapter (random lora_B) and an untouched one (lora_B = 0)."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("adapters")
    peft_model = get_peft_model(_model(tiny_llm_folder),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(root / "zero")
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)
    peft_model.save_pretrained(root / "good")
    return {"good": root / "good", "zero": root / "zero"}


def _copy(source: Path, target: Path, **config_changes) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "adapter_config.json").read_text())
    config.update(config_changes)
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def test_good_adapter_loads_strictly_and_changes_logits(tiny_llm_folder, adapters):
    model = _model(tiny_llm_folder)
    probe = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        plain = model(probe).logits
        peft_model, reports = load_adapters(model, [adapters["good"]])
        fused = peft_model(probe).logits
        with peft_model.disable_adapter():
            restored = peft_model(probe).logits
    assert reports[0].tensors == 120 and reports[0].modules == 60 and reports[0].delta_norm > 0
    assert (fused - plain).abs().max() > 1e-3
    assert torch.allclose(restored, plain)


def test_zero_adapter_is_refused_as_a_no_op(tiny_llm_folder, adapters):
    with pytest.raises(AdapterError, match="changes nothing"):
        load_adapters(_model(tiny_llm_folder), [adapters["zero"]])


def test_rank_mismatch_reports_shapes(tiny_llm_folder, adapters, tmp_path):
    bad = _copy(adapters["good"], tmp_path / "rank8", r=8)
    with pytest.raises(AdapterError, match=r"shape of .*q_proj.lora_A.*file \(4, 576\), model \(8, 576\)"):
        load_adapters(_model(tiny_llm_folder), [bad])


def test_dropped_keys_are_refused(tiny_llm_folder, adapters, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = _copy(adapters["good"], tmp_path / "dropped")
    weights = load_file(str(bad / "adapter_model.safetensors"))
    kept = {k: v for k, v in weights.items() if "layers.0." not in k}
    kept["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = torch.zeros(4, 576)
    save_file(kept, str(bad / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match=r"4 missing.*\n.*1 unexpected"):
        load_adapters(_model(tiny_llm_folder), [bad])


def test_foreign_architecture_is_refused(tiny_llm_folder, adapters, tmp_path):
    bad = _copy(adapters["good"], tmp_path / "chatglm", target_modules=["query_key_value"])
    with pytest.raises(AdapterError, match="query_key_value"):
        load_adapters(_model(tiny_llm_folder), [bad])


def test_bad_folders_and_files_are_clear_errors(tiny_llm_folder, adapters, tmp_path):
    with pytest.raises(AdapterError, match="does not exist"):
        load_adapters(_model(tiny_llm_folder), [tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        load_adapters(_model(tiny_llm_folder), [tmp_path / "empty"])
    corrupt = _copy(adapters["good"], tmp_path / "corrupt")
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(AdapterError, match="cannot read adapter weights"):
        load_adapters(_model(tiny_llm_folder), [corrupt])


def test_bin_weights_load_without_full_pickle(tiny_llm_folder, adapters, tmp_path):
    from safetensors.torch import load_file

    folder = _copy(adapters["good"], tmp_path / "bin")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    (folder / "adapter_model.safetensors").unlink()
    torch.save(weights, folder / "adapter_model.bin")
    _, reports = load_adapters(_model(tiny_llm_folder), [folder])
    assert reports[0].tensors == 120

    class Hostile:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Hostile()}, folder / "adapter_model.bin")
    with pytest.raises(AdapterError, match="cannot read adapter weights"):
        load_adapters(_model(tiny_llm_folder), [folder])
