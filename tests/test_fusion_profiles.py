"""Architecture profiles: module names match real transformers models; fused row layouts are right."""

import pytest
import torch

from kbqa.adapters.layermap import donor_layers_for
from kbqa.adapters.profiles import profile_for, profile_for_folder
from kbqa.errors import AdapterError


def _names(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_modules()}


@pytest.mark.parametrize("family", ["llama", "qwen2", "glm", "glm4", "gemma3_text"])
def test_profile_names_exist_in_the_transformers_model(family):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                  intermediate_size=48, vocab_size=64, pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config)
    profile = profile_for(config.to_dict())
    names = _names(model)
    for layer in range(2):
        for spec in profile.modules:
            assert spec.name(layer) in names
            weight = model.get_submodule(spec.name(layer)).weight
            assert tuple(weight.shape) == profile.module_shape(spec)


def test_glm_fuses_gate_and_up_in_blocks():
    profile = profile_for({"model_type": "glm", "hidden_size": 32, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                           "intermediate_size": 48})
    assert profile.spec_for("gate") is profile.spec_for("up")
    assert profile.spec_for("up").leaf == "gate_up_proj"
    assert profile.role_rows("gate") == list(range(48))
    assert profile.role_rows("up") == list(range(48, 96))


def test_real_smollm2_profile(tiny_llm_folder):
    profile = profile_for_folder(tiny_llm_folder)
    assert (profile.family, profile.num_layers, profile.hidden_size) == ("llama", 30, 576)
    assert (profile.num_heads, profile.num_kv_heads, profile.head_dim) == (9, 3, 64)
    assert profile.role_shape("k") == (192, 576)
    assert profile.parse_module("model.layers.7.self_attn.v_proj")[0] == 7
    assert profile.parse_module("model.layers.30.self_attn.v_proj") is None


@pytest.fixture(scope="module")
def chatglm_configs(tmp_path_factory) -> dict[str, dict]:
    """Full-size configs from the real ChatGLM-6B / ChatGLM2 configuration classes (their
    defaults are the 6B models'; ChatGLM2/3-6B turn on 2 multi-query groups)."""
    from tests.chatglm_models import real_config

    root = tmp_path_factory.mktemp("glm-configs")
    return {"chatglm": real_config("chatglm", root / "v1"),
            "chatglm3": real_config("chatglm2", root / "v2", multi_query_attention=True,
                                    multi_query_group_num=2)}


def test_chatglm_v1_qkv_is_interleaved_per_head(chatglm_configs):
    profile = profile_for(chatglm_configs["chatglm"])
    spec = profile.spec_for("q")
    assert spec.name(3) == "transformer.layers.3.attention.query_key_value"
    assert profile.module_shape(spec) == (12288, 4096)
    assert profile.roles == ("q", "k", "v", "o", "up", "down")  # GELU MLP: no gate
    q, k, v = (profile.role_rows(r) for r in "qkv")
    assert q[:2] == [0, 1] and q[128] == 384 and k[0] == 128 and v[0] == 256 and v[-1] == 12287
    assert sorted(q + k + v) == list(range(12288))


def test_chatglm3_qkv_in_blocks_with_kv_groups(chatglm_configs):
    profile = profile_for(chatglm_configs["chatglm3"])
    assert profile.family == "chatglm2"
    assert profile.spec_for("k").name(0) == "transformer.encoder.layers.0.self_attention.query_key_value"
    assert profile.module_shape(profile.spec_for("q")) == (4096 + 2 * 256, 4096)
    assert profile.role_rows("k")[0] == 4096 and profile.role_rows("v")[0] == 4352
    assert profile.spec_for("gate").leaf == "dense_h_to_4h"
    assert profile.role_rows("up")[0] == 13696


def test_unknown_architecture_names_the_supported_ones():
    with pytest.raises(AdapterError, match="'gpt2'.*supported: .*chatglm.*llama.*qwen2"):
        profile_for({"model_type": "gpt2"})
    with pytest.raises(AdapterError, match="lacks 'num_layers'"):
        profile_for({"model_type": "chatglm", "hidden_size": 8, "num_attention_heads": 2})


def test_layer_maps():
    assert [donor_layers_for(j, 4, 4, "proportional") for j in range(4)] == \
        [[(j, 1.0)] for j in range(4)]
    assert [donor_layers_for(j, 4, 4, "interpolate") for j in range(4)] == \
        [[(j, 1.0)] for j in range(4)]
    # 32 LLaMA layers into 28 ChatGLM layers: ends pinned, relative depth in between
    assert donor_layers_for(0, 28, 32, "proportional") == [(0, 1.0)]
    assert donor_layers_for(27, 28, 32, "proportional") == [(31, 1.0)]
    assert donor_layers_for(9, 28, 32, "proportional") == [(10, 1.0)]  # 9·31/27 = 10.33
    (i0, w0), (i1, w1) = donor_layers_for(9, 28, 32, "interpolate")
    assert (i0, i1) == (10, 11) and w1 == pytest.approx(9 * 31 / 27 - 10) and w0 + w1 == 1.0
    assert donor_layers_for(1, 3, 2, "interpolate") == [(0, 0.5), (1, 0.5)]
