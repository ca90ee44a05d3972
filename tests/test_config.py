"""Settings layering (defaults < file < env < CLI), validation and atomic saving."""

from pathlib import Path

import pytest

from kbqa.config import Settings, load_settings, save_settings
from kbqa.errors import ConfigError


def test_layers_override_in_order(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('top_k = 7\ntemperature = 0.5\nkb = "filekb"\n')
    env = {"KBQA_HOME": str(home), "KBQA_TOP_K": "9", "KBQA_ADAPTERS": "/a,/b"}
    settings = load_settings({"kb": "clikb", "retrieval_mode": None}, environ=env)
    assert settings.home == home
    assert settings.temperature == 0.5          # file beats default
    assert settings.top_k == 9                  # env beats file
    assert settings.kb == "clikb"               # CLI beats file
    assert settings.retrieval_mode == "bm25"    # None means "flag not given"
    assert settings.adapters == [Path("/a"), Path("/b")]


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
    assert again.top_k == 5 and again.prompt_template == "{context}|{question}"
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
