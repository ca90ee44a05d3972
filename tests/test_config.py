"""Settings layering (defaults < file < env < CLI), validation and atomic saving."""

from pathlib import Path

import pytest

from kbqa.config import Settings, load_settings, save_settings, validate_settings
from kbqa.errors import ConfigError


def test_layers_override_in_order(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('top_k = 7\ntemperature = 0.5\nkb = "filekb"\n')
    env = {"KBQA_HOME": str(home), "KBQA_TOP_K": "9", "KBQA_ADAPTERS": "/a,/b"}
    settings = load_settings({"kb": "clikb", "retrieval_mode": None}, environ=env)
    assert settings.home == home
    assert settings.llm.temperature == 0.5          # file beats default
    assert settings.retrieval.top_k == 9                  # env beats file
    assert settings.kb.name == "clikb"               # CLI beats file
    assert settings.retrieval.mode == "bm25"    # None means "flag not given"
    assert settings.llm.adapters == [Path("/a"), Path("/b")]


@pytest.mark.parametrize("values, message", [
    ({"top_k": 0}, "top_k"),
    ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap"),
    ({"retrieval_mode": "magic"}, "retrieval_mode"),
    ({"tmperature": 0.3}, "tmperature"),
])
def test_bad_values_are_rejected_with_the_field_name(tmp_path: Path, values, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({"home": tmp_path, **values}, environ={})


def test_unreadable_config_file_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("top_k = = 3")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_settings(config_file=bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})


def test_save_round_trips_only_non_defaults(tmp_path: Path):
    settings = Settings(home=tmp_path, top_k=5, prompt_template="{context}|{question}")
    path = save_settings(settings)
    assert path == tmp_path / "config.toml"
    assert "home" not in path.read_text() and "chunk_size" not in path.read_text()
    again = load_settings(environ={"KBQA_HOME": str(tmp_path)})
    assert again.retrieval.top_k == 5 and again.answer.prompt_template == "{context}|{question}"
    assert not list(tmp_path.glob("*.tmp"))


def test_vector_store_settings_from_env_and_flags(tmp_path: Path):
    from kbqa.vector_backends import VectorStoreConfig

    env = {"KBQA_HOME": str(tmp_path), "KBQA_VECTOR_STORE": "milvus",
           "KBQA_MILVUS_URI": "http://milvus:19530", "KBQA_MILVUS_TOKEN": "none"}
    settings = load_settings(environ=env)
    assert settings.vector_store_config == VectorStoreConfig("milvus", "http://milvus:19530")
    assert load_settings(environ={"KBQA_HOME": str(tmp_path)}).vector_store_config == \
        VectorStoreConfig()
    with pytest.raises(ConfigError, match="vector_store"):
        load_settings({"vector_store": "annoy"}, environ=env)


def test_sections_in_the_file_and_short_names_everywhere_else(tmp_path: Path):
    (tmp_path / "config.toml").write_text('[retrieval]\ntop_k = 4\nmode = "hybrid"\n'
                                          '[llm]\ndtype = "float32"\n')
    settings = load_settings({"home": tmp_path, "llm_dtype": "bfloat16"}, environ={})
    assert (settings.retrieval.top_k, settings.retrieval.mode) == (4, "hybrid")
    assert settings.llm.dtype == "bfloat16"  # the flag beats the file's [llm] dtype
    with pytest.raises(ConfigError, match=r"retrieval\.mode \(retrieval_mode\)"):
        load_settings({"home": tmp_path, "retrieval_mode": "magic"}, environ={})
    (tmp_path / "config.toml").write_text("[retrieval]\ntop_kk = 4\n")
    with pytest.raises(ConfigError, match="top_kk"):
        load_settings({"home": tmp_path}, environ={})


def test_a_flat_config_file_of_the_previous_version_still_loads(tmp_path: Path):
    # as 9974114's save_settings wrote it: one flat table of the non-default keys
    (tmp_path / "config.toml").write_text(
        'llm = "embedded:qwen2.5-coder-0.5b-instruct"\nllm_dtype = "float32"\ntop_k = 5\n'
        'retrieval_mode = "hybrid"\nkb = "公司制度"\nserve_port = 9000\nchunk_size = 400\n'
        'chunk_overlap = 80\nvariants = { cmrc = ["adapters/x"] }\nhistory_turns = 2\n')
    settings = load_settings({"home": tmp_path}, environ={})
    assert settings.llm.model == "embedded:qwen2.5-coder-0.5b-instruct"
    assert (settings.llm.dtype, settings.retrieval.top_k, settings.retrieval.mode) == \
        ("float32", 5, "hybrid")
    assert (settings.kb.name, settings.kb.chunk_size, settings.kb.chunk_overlap) == \
        ("公司制度", 400, 80)
    assert settings.server.port == 9000 and settings.answer.history_turns == 2
    assert settings.server.variants == {"cmrc": [Path("adapters/x")]}


def test_secrets_never_reach_the_config_file(tmp_path: Path):
    settings = Settings(home=tmp_path, llm="openai:http://h:1/v1#m", llm_api_key="sk-secret",
                        milvus_token="root:Milvus", top_k=4)
    text = save_settings(settings).read_text()
    assert "sk-secret" not in text and "root:Milvus" not in text
    assert load_settings(environ={"KBQA_HOME": str(tmp_path)}).retrieval.top_k == 4


def test_a_settings_change_writes_only_what_changed(tmp_path: Path):
    from kbqa.service import KbqaService

    (tmp_path / "config.toml").write_text("[retrieval]\ntop_k = 4\n")
    env = {"KBQA_HOME": str(tmp_path), "KBQA_LLM_API_KEY": "sk-from-env",
           "KBQA_MILVUS_TOKEN": "root:from-env", "KBQA_TEMPERATURE": "0.7"}
    service = KbqaService(load_settings(environ=env))
    new = service.update_settings({"history_turns": 1, "llm_api_key": "sk-typed-in"})
    assert new.answer.history_turns == 1 and new.llm.api_key == "sk-typed-in"  # applied now
    text = (tmp_path / "config.toml").read_text()
    for secret_or_env_value in ("sk-from-env", "root:from-env", "sk-typed-in", "0.7"):
        assert secret_or_env_value not in text
    again = load_settings(environ={"KBQA_HOME": str(tmp_path)})
    assert (again.retrieval.top_k, again.answer.history_turns) == (4, 1)
    assert again.llm.temperature == 0.0 and again.llm.api_key is None
    with pytest.raises(ConfigError, match="top_k"):
        service.update_settings({"top_k": 0})
    assert (tmp_path / "config.toml").read_text() == text  # nothing written


def test_grounding_policy_in_the_answer_section(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    assert Settings(home=home).answer.grounding == "span"
    (home / "config.toml").write_text('[answer]\ngrounding = "off"\n')
    assert load_settings(environ={"KBQA_HOME": str(home)}).answer.grounding == "off"
    env = {"KBQA_HOME": str(home), "KBQA_GROUNDING": "refuse"}
    assert load_settings(environ=env).value("grounding") == "refuse"
    with pytest.raises(ConfigError, match=r"answer\.grounding"):
        load_settings({"grounding": "strict"}, environ={"KBQA_HOME": str(home)})


def test_invalid_values_are_told_apart_by_setting_and_kind() -> None:
    """A form shows each problem under its field: ConfigError names the setting and the kind."""
    with pytest.raises(ConfigError) as caught:
        validate_settings({"top_k": 0, "retrieval_mode": "fuzzy", "temperature": 0.5})
    found = {(p.name, p.kind): p.context for p in caught.value.problems}
    assert found.keys() == {("top_k", "greater_than_equal"), ("retrieval_mode", "literal_error")}
    assert found["top_k", "greater_than_equal"] == {"ge": 1}
    assert "retrieval.top_k" in str(caught.value)  # the CLI's one-line message is unchanged
