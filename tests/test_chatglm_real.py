"""kbqa's ChatGLM handling against the real ChatGLM-6B (v1) and ChatGLM2-6B modeling code.

The tiny models come from tests/chatglm_models.py (modelscope's modeling files, random weights):
profiles must name their real modules, strict LoRA must load and merge exactly on them, and a
transplant from a LLaMA-layout donor must land in the query, key or value part of every head
as the model's own code splits its fused query_key_value.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from kbqa.adapters import load_adapters
from kbqa.adapters.profiles import profile_for, profile_for_folder
from kbqa.adapters.transplant import transplant
from kbqa.errors import AdapterError
from tests.chatglm_models import import_folder, load_chatglm, sample_ids, save_chatglm
from tests.fusion_models import adapter_delta, save_adapter, save_llama

VERSIONS = ["chatglm", "chatglm2"]
LAYERS, HEADS, DIM = 2, 4, 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("glm")
    return {
        "chatglm": save_chatglm(root / "chatglm-6b", "chatglm", layers=LAYERS, heads=HEADS),
        "chatglm2": save_chatglm(root / "chatglm2-6b", "chatglm2", layers=LAYERS, heads=HEADS,
                                 groups=2),
        # LLaMA donors of the same widths: MHA (4 kv heads) for v1, 2 kv groups for v2
        "llama-chatglm": save_llama(root / "llama-mha", layers=LAYERS, heads=HEADS, kv_heads=4,
                                    intermediate=256, vocab=600),
        "llama-chatglm2": save_llama(root / "llama-gqa", layers=LAYERS, heads=HEADS, kv_heads=2,
                                     intermediate=128, vocab=600, seed=7),
    }


def _logits(model, folder: Path) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=sample_ids(folder)).logits.float()


@pytest.mark.parametrize("version", VERSIONS)
def test_profile_names_and_shapes_are_the_real_modules(folders, version):
    folder = folders[version]
    model = load_chatglm(folder)
    profile = profile_for_folder(folder)
    assert profile_for(model.config.to_dict()) == profile  # the real class's own dict agrees
    assert profile.family == version
    assert (profile.num_heads, profile.head_dim) == (HEADS, DIM)
    assert profile.num_kv_heads == (2 if version == "chatglm2" else HEADS)
    names = dict(model.named_modules())
    for layer in range(LAYERS):
        for spec in profile.modules:
            assert tuple(names[spec.name(layer)].weight.shape) == profile.module_shape(spec)


@pytest.mark.parametrize("version", VERSIONS)
def test_strict_lora_on_fused_modules_changes_logits_and_merges_exactly(folders, version,
                                                                        tmp_path):
    folder = folders[version]
    targets = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
    adapter = _lora_on(load_chatglm(folder), tmp_path / "lora", targets)
    model = load_chatglm(folder)
    base = _logits(model, folder)
    qkv_name = profile_for_folder(folder).spec_for("q").name(1)
    base_qkv = model.get_submodule(qkv_name).weight.detach().clone()
    peft_model, reports = load_adapters(model, [adapter])
    assert reports[0].modules == 4 * LAYERS and reports[0].delta_norm > 0
    adapted = _logits(peft_model, folder)
    assert (adapted - base).abs().max() > 1e-2
    merged = peft_model.merge_and_unload()
    torch.testing.assert_close(_logits(merged, folder), adapted, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged.get_submodule(qkv_name).weight,
                               base_qkv + adapter_delta(adapter, qkv_name), atol=1e-6, rtol=0)


def test_an_adapter_for_one_version_is_refused_by_the_other(folders, tmp_path):
    adapter = _lora_on(load_chatglm(folders["chatglm"]), tmp_path / "v1", ["query_key_value"])
    with pytest.raises(AdapterError, match="does not fit|missing|shape"):
        load_adapters(load_chatglm(folders["chatglm2"]), [adapter])


def _lora_on(model, out: Path, targets: list[str]) -> Path:
    """A peft LoRA with random lora_B on an in-memory model (save_adapter needs an Auto class)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    torch.manual_seed(11)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    peft_model.save_pretrained(out)
    return out


@contextmanager
def _split_qkv(model, folder: Path):
    """Records layer 0's query, key and value as the model's own code splits its fused
    query_key_value ([seq, batch, heads or groups, head_dim], before rotary), and its input."""
    seen: dict[str, torch.Tensor] = {}
    if "chatglm2" in folder.name:
        attention = model.get_submodule("transformer.encoder.layers.0.self_attention")
        modeling = import_folder(folder)
        rotary = modeling.apply_rotary_pos_emb
        calls: list[torch.Tensor] = []

        def recording_rotary(x, rope_cache):
            calls.append(x.detach().clone())
            return rotary(x, rope_cache)

        def value(_module, args):
            seen.setdefault("v", args[2].detach().clone())  # expanded to heads (MQA groups)

        modeling.apply_rotary_pos_emb = recording_rotary
        hooks = [attention.core_attention.register_forward_pre_hook(value)]
    else:
        attention = model.get_submodule("transformer.layers.0.attention")
        split = attention.split_tensor_along_last_dim

        def recording_split(tensor, parts, contiguous_split_chunks=False):
            out = split(tensor, parts, contiguous_split_chunks)
            seen.update(zip("qkv", (t.detach().clone() for t in out)))
            return out

        attention.split_tensor_along_last_dim = recording_split
        hooks = []
    qkv = attention.query_key_value
    hooks.append(qkv.register_forward_pre_hook(
        lambda _m, args: seen.setdefault("x", args[0].detach().clone())))
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()
        if "chatglm2" in folder.name:
            modeling.apply_rotary_pos_emb = rotary
            seen["q"], seen["k"] = calls[0], calls[1]  # layer 0 rotates q, then k
        else:
            del attention.split_tensor_along_last_dim


def _run_split(model, folder: Path) -> dict[str, torch.Tensor]:
    with _split_qkv(model, folder) as seen, torch.no_grad():
        model(input_ids=sample_ids(folder))
    return seen


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("role", ["q", "k", "v"])
def test_transplanted_delta_lands_in_its_role_of_every_head_after_the_real_split(
        folders, version, role, tmp_path):
    """ΔW on the donor's {role}_proj only: after transplant into the fused query_key_value, the
    model's own split shows that role changed by exactly ΔW·x in every head (or kv group, for
    v2's keys and values) and the other two unchanged."""
    folder, llama = folders[version], folders[f"llama-{version}"]
    donor = save_adapter(llama, tmp_path / "donor", targets=[f"{role}_proj"], seed=3)
    out = tmp_path / "transplanted"
    report = transplant(donor, folder, out)
    assert report.totals()["target_modules"] == LAYERS and not report.unparsed_keys
    model = load_chatglm(folder)
    base = _run_split(model, folder)
    peft_model, _ = load_adapters(model, [out])
    adapted = _run_split(peft_model, folder)
    torch.testing.assert_close(adapted["x"], base["x"])  # layer 0's input: the same embedding
    delta = adapter_delta(donor, f"model.layers.0.self_attn.{role}_proj")
    expected = (base["x"] @ delta.T).view(*base["x"].shape[:2], -1, DIM)
    if version == "chatglm2" and role == "v":  # v after the code's expansion of 2 groups to 4 heads
        expected = expected.repeat_interleave(HEADS // 2, dim=2)
    changed = adapted[role] - base[role]
    assert changed.abs().max() > 1e-3
    torch.testing.assert_close(changed, expected, atol=2e-5, rtol=1e-4)
    for other in set("qkv") - {role}:
        torch.testing.assert_close(adapted[other], base[other], atol=1e-6, rtol=0)


@pytest.mark.parametrize("version", VERSIONS)
def test_local_llm_refuses_a_real_chatglm_folder_with_a_clear_model_error(folders, version):
    """ChatGLM-6B's and ChatGLM2's own code (trust_remote_code) predates transformers 5: it fails
    inside transformers (no post_init, config fields and generation hooks that are gone). kbqa
    must say so as a ModelError naming the folder's code, not leak an AttributeError."""
    import transformers

    from kbqa.errors import ModelError
    from kbqa.llm.local import LocalLLM

    with pytest.raises(ModelError) as raised:
        LocalLLM.from_folder(folders[version], dtype="float32")
    message = str(raised.value)
    assert "modeling_chatglm.py" in message and transformers.__version__ in message
    assert str(folders[version]) in message


@pytest.mark.parametrize(("version", "rendered"), [
    ("chatglm", "[Round 0]\n问：你好\n答："),
    ("chatglm2", "[Round 1]\n\n问：你好\n\n答："),
])
def test_each_version_reads_its_own_round_format(folders, version, rendered):
    """Both versions' configs say model_type "chatglm": the format must follow the architecture."""
    from transformers import AutoTokenizer

    from kbqa.llm.local import LocalLLM

    tokenizer = AutoTokenizer.from_pretrained(folders[version], trust_remote_code=True,
                                              local_files_only=True)
    llm = LocalLLM(model=load_chatglm(folders[version]), tokenizer=tokenizer, cpu_speedups=False)
    assert llm.model.config.model_type == "chatglm"
    assert llm.render("你好") == rendered
