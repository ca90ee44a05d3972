"""Transplant math checked exactly against independently built references, on tiny random models."""

import json
from pathlib import Path

import pytest
import torch

from kbqa.adapters import load_adapters
from kbqa.adapters.transplant import TransplantOptions, refactor, transplant
from kbqa.adapters.verify import verify_adapter
from kbqa.errors import AdapterError
from tests.chatglm_models import load_chatglm, save_chatglm
from tests.fusion_models import (
    adapter_delta,
    save_adapter,
    save_config,
    save_llama,
    save_qwen2,
)

ATOL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fusion")
    llama = save_llama(root / "llama")  # hidden 64, 4 layers, 4 heads of 16
    llama_gqa = save_llama(root / "llama_gqa", kv_heads=2, seed=3)
    return {
        "llama": llama,
        "llama_adapter": save_adapter(llama, root / "llama_adapter"),
        "llama_gqa": llama_gqa,
        "llama_gqa_adapter": save_adapter(llama_gqa, root / "llama_gqa_adapter", seed=4),
        "llama2": save_llama(root / "llama2", layers=2, seed=5),
        "qwen2": save_qwen2(root / "qwen2"),  # hidden 96, 3 layers
        # ChatGLM-6B and ChatGLM2-6B (ChatGLM3's architecture) on their real modeling code
        "chatglm": save_chatglm(root / "chatglm", "chatglm", layers=4, heads=4, ffn=128),
        "chatglm2": save_chatglm(root / "chatglm2", "chatglm2", layers=4, heads=4, groups=2,
                                 ffn=128),
    }


def _rows(delta: torch.Tensor, heads: int) -> torch.Tensor:
    return delta.reshape(heads, -1, delta.shape[-1])


def test_llama_into_chatglm_v1_scatters_qkv_per_head(models, tmp_path):
    out = tmp_path / "glm"
    report = transplant(models["llama_adapter"], models["chatglm"], out)
    donor = lambda i, name: adapter_delta(models["llama_adapter"], f"model.layers.{i}.{name}")
    for i in range(4):
        # reference: [head][q, k, v][head_dim] built by reshaping, not by kbqa's row indices
        q, k, v = (_rows(donor(i, f"self_attn.{r}_proj"), 4) for r in "qkv")
        expected = torch.stack([q, k, v], dim=1).reshape(192, 64)
        got = adapter_delta(out, f"transformer.layers.{i}.attention.query_key_value")
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(adapter_delta(out, f"transformer.layers.{i}.attention.dense"),
                                   donor(i, "self_attn.o_proj"), atol=ATOL, rtol=0)
        torch.testing.assert_close(adapter_delta(out, f"transformer.layers.{i}.mlp.dense_h_to_4h"),
                                   donor(i, "mlp.up_proj"), atol=ATOL, rtol=0)
    assert report.rank == 12  # q, k, v of rank 4 each in one fused module: exact
    assert report.totals()["max_refactor_error"] < 1e-5
    assert {"role": "gate", "reason": "target family chatglm has no 'gate' projection"} \
        in report.skipped
    saved = json.loads((out / "transplant_report.json").read_text())
    assert saved["totals"]["target_modules"] == 16
    qkv = next(m for m in saved["modules"] if m["module"].endswith("0.attention.query_key_value"))
    assert [r["role"] for r in qkv["roles"]] == ["q", "k", "v"]
    assert qkv["roles"][0]["sources"][0]["donor_module"] == "model.layers.0.self_attn.q_proj"


def test_chatglm_v1_result_loads_strictly_into_its_module_tree(models, tmp_path):
    out = tmp_path / "glm-6b.v1"  # a "." in the folder name must not reach peft's adapter name
    transplant(models["llama_adapter"], models["chatglm"], out)
    _, reports = load_adapters(load_chatglm(models["chatglm"]), [out])
    assert reports[0].modules == 16 and reports[0].delta_norm > 0


def test_llama_into_chatglm2_uses_blocks_and_fused_gate_up(models, tmp_path):
    out = tmp_path / "glm2"
    transplant(models["llama_gqa_adapter"], models["chatglm2"], out)
    donor = lambda i, name: adapter_delta(models["llama_gqa_adapter"], f"model.layers.{i}.{name}")
    prefix = "transformer.encoder.layers.2"
    qkv = torch.cat([donor(2, f"self_attn.{r}_proj") for r in "qkv"])
    torch.testing.assert_close(adapter_delta(out, f"{prefix}.self_attention.query_key_value"),
                               qkv, atol=ATOL, rtol=0)
    gate_up = torch.cat([donor(2, "mlp.gate_proj"), donor(2, "mlp.up_proj")])
    torch.testing.assert_close(adapter_delta(out, f"{prefix}.mlp.dense_h_to_4h"), gate_up,
                               atol=ATOL, rtol=0)


def test_depth_mapping_interpolate_and_proportional(models, tmp_path):
    donor = lambda i: adapter_delta(models["llama_adapter"], f"model.layers.{i}.self_attn.v_proj")
    prop = transplant(models["llama_adapter"], models["llama2"], tmp_path / "p")
    got = lambda out, j: adapter_delta(out, f"model.layers.{j}.self_attn.v_proj")
    torch.testing.assert_close(got(tmp_path / "p", 0), donor(0), atol=ATOL, rtol=0)
    torch.testing.assert_close(got(tmp_path / "p", 1), donor(3), atol=ATOL, rtol=0)
    assert prop.unused_donor_layers == [1, 2]
    # 4 donor layers into 3 target layers: x = j·3/2, so target 1 blends donor 1 and 2 equally
    save_llama(tmp_path / "llama3", layers=3, seed=6)
    transplant(models["llama_adapter"], tmp_path / "llama3", tmp_path / "i",
               options=TransplantOptions(layer_map="interpolate"))
    torch.testing.assert_close(got(tmp_path / "i", 1), 0.5 * donor(1) + 0.5 * donor(2),
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(got(tmp_path / "i", 2), donor(3), atol=ATOL, rtol=0)


def test_refactor_is_exact_when_rank_suffices_and_optimal_when_not():
    torch.manual_seed(0)
    delta = torch.randn(40, 6) @ torch.randn(6, 30)
    lora_a, lora_b, error = refactor(delta, 8)
    assert lora_a.shape == (8, 30) and lora_b.shape == (40, 8) and error < 1e-5
    torch.testing.assert_close(lora_b @ lora_a, delta, atol=1e-4, rtol=0)
    _, _, error = refactor(delta, 3)
    s = torch.linalg.svdvals(delta)
    assert error == pytest.approx(float(s[3:].norm() / s.norm()), rel=1e-4)


def test_identical_bases_make_the_subspace_map_the_identity(models, tmp_path):
    options = TransplantOptions(align_all=True, subspace_rank=128, min_similarity=0.99)
    report = transplant(models["llama_adapter"], models["llama"], tmp_path / "same",
                        options=options)
    for module in ("model.layers.1.self_attn.k_proj", "model.layers.3.mlp.down_proj"):
        torch.testing.assert_close(adapter_delta(tmp_path / "same", module),
                                   adapter_delta(models["llama_adapter"], module),
                                   atol=1e-4, rtol=0)
    role = report.modules[0]["roles"][0]["sources"][0]
    assert role["mapping"] == "subspace" and role["similarity"] == pytest.approx(1.0, abs=1e-4)


def test_width_mismatch_without_donor_weights_is_refused(models, tmp_path):
    config_only = save_config(tmp_path / "donor_config",
                              json.loads((models["llama"] / "config.json").read_text()))
    with pytest.raises(AdapterError, match=r"differ in width .*q: \(64, 64\) → \(96, 96\).*"
                                           r"never pads or truncates"):
        transplant(models["llama_adapter"], models["qwen2"], tmp_path / "out", donor=config_only)


def test_width_mismatch_with_weights_loads_strictly(models, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "qwen"
    report = transplant(models["llama_adapter"], models["qwen2"], out,
                        options=TransplantOptions(min_similarity=0.0, rank=4))
    assert report.totals()["target_modules"] == 3 * 7 and not report.skipped
    source = report.modules[0]["roles"][0]["sources"][0]
    assert source["mapping"] == "subspace" and 0 < source["captured"] <= 1.0 + 1e-6
    assert source["donor_layer"] == 0 and report.unused_donor_layers == [1]  # x = 0, 1.5→2, 3
    model = AutoModelForCausalLM.from_pretrained(models["qwen2"], dtype=torch.float32)
    _, reports = load_adapters(model, [out])
    assert reports[0].modules == 21


def test_dissimilar_subspaces_are_skipped_with_reasons(models, tmp_path):
    with pytest.raises(AdapterError, match=r"nothing of .* could be mapped.*"
                                           r"'reason': 'subspace similarity 0\.\d+ below 1\.01'"):
        transplant(models["llama_adapter"], models["qwen2"], tmp_path / "strict",
                   options=TransplantOptions(min_similarity=1.01))


def test_unparsed_keys_are_reported_not_guessed(models, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "extra"
    shutil.copytree(models["llama_adapter"], folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    weights["base_model.model.model.embed_tokens.lora_A.weight"] = torch.ones(4, 256)
    weights["base_model.model.lm_head.lora_B.weight"] = torch.ones(256, 4)
    save_file(weights, str(folder / "adapter_model.safetensors"))
    report = transplant(folder, models["chatglm"], tmp_path / "out")
    assert sorted(report.unparsed_keys) == ["base_model.model.lm_head.lora_B.weight",
                                            "base_model.model.model.embed_tokens.lora_A.weight"]


def test_pickle_payload_in_bin_is_refused(models, tmp_path):
    import shutil

    folder = tmp_path / "bin"
    shutil.copytree(models["llama_adapter"], folder)
    (folder / "adapter_model.safetensors").unlink()

    class Hostile:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": Hostile()},
               folder / "adapter_model.bin")
    with pytest.raises(AdapterError, match="cannot read adapter weights"):
        transplant(folder, models["chatglm"], tmp_path / "out")


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(tok_models.WordLevel({f"w{i}": i for i in range(256)}, unk_token="w0"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=raw)


def test_verify_a_width_mapped_transplant(models, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "qwen"
    transplant(models["llama_adapter"], models["qwen2"], out,
               options=TransplantOptions(min_similarity=0.0))
    model = AutoModelForCausalLM.from_pretrained(models["qwen2"], dtype=torch.float32)
    report = verify_adapter(model, tokenizer, [out], probe="w1 w2 w3", tolerance=1e-6)
    assert report.applied and report.modules == 21 and not report.zero_modules, report.reasons


def test_verify_zero_partial_and_dropped_adapters(models, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    load = lambda: AutoModelForCausalLM.from_pretrained(models["llama"], dtype=torch.float32)
    probe = "w1 w2 w3 w4 w5"

    report = verify_adapter(load(), tokenizer, [models["llama_adapter"]], probe=probe)
    assert report.applied and report.max_logit_diff > 1e-3 and report.modules == 28

    zero = save_adapter(models["llama"], tmp_path / "zero", zero=True)
    with pytest.raises(AdapterError, match="changes nothing"):
        verify_adapter(load(), tokenizer, [zero], probe=probe)

    from safetensors.torch import load_file, save_file

    partial = save_adapter(models["llama"], tmp_path / "partial", targets=["q_proj", "v_proj"])
    weights = load_file(str(partial / "adapter_model.safetensors"))
    weights = {k: (torch.zeros_like(v) if "layers.1." in k and "lora_B" in k else v)
               for k, v in weights.items()}
    save_file(weights, str(partial / "adapter_model.safetensors"))
    report = verify_adapter(load(), tokenizer, [partial], probe=probe)
    assert not report.applied and len(report.zero_modules) == 2
    assert "2 of 8 modules have ΔW = 0" in report.reasons[0]

    dropped = {k: v for k, v in weights.items() if "layers.0." not in k}
    save_file(dropped, str(partial / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="4 missing"):
        verify_adapter(load(), tokenizer, [partial], probe=probe)


def test_an_embedded_donor_must_be_resolved_by_the_caller(models, tmp_path):
    """The library reads no app settings: an adapter whose config names an embedded base model
    needs its folder as `donor` (the CLI resolves it with the app's model cache)."""
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(models["llama_adapter"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "embedded:smollm2-135m-instruct"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="embedded model 'embedded:smollm2-135m-instruct'"):
        transplant(adapter, models["chatglm"], tmp_path / "out")
    report = transplant(adapter, models["chatglm"], tmp_path / "out", donor=models["llama"])
    assert report.totals()["target_modules"] > 0


def test_a_transplant_onto_an_embedded_target_records_its_portable_name(models, tmp_path,
                                                                       monkeypatch):
    """`--target embedded:NAME` is recorded as that name, not as this machine's cache path, so the
    adapter is offered for that model (and refused on others) on any machine."""
    from kbqa.adapters import cli
    from kbqa.cli import main

    monkeypatch.setattr(cli, "_model_folder", lambda spec: (
        models["qwen2"] if spec.startswith("embedded") else Path(spec)))
    out = tmp_path / "to-embedded"
    assert main(["adapters", "transplant", str(models["llama_adapter"]), "--target",
                 "embedded:qwen2.5-coder-0.5b-instruct", "--donor", str(models["llama"]),
                 "--out", str(out), "--min-similarity", "0", "--rank", "4"]) == 0
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == "embedded:qwen2.5-coder-0.5b-instruct"
    folder_target = tmp_path / "to-folder"
    transplant(models["llama_adapter"], models["qwen2"], folder_target,
               options=TransplantOptions(min_similarity=0.0, rank=4))
    config = json.loads((folder_target / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == str(Path(models["qwen2"]).resolve())
