"""Model resolution: embedded GGUF packages become cached folders; bad specs fail clearly."""

import os
from pathlib import Path

import pytest

from kbqa.errors import ModelError
from kbqa.llm.loading import EmbeddedGGUF, joined_gguf, resolve_llm


def test_embedded_model_is_converted_once_and_reused(tiny_llm_folder: Path, model_cache: Path):
    assert (tiny_llm_folder / "config.json").is_file()
    assert list(tiny_llm_folder.glob("*.safetensors"))
    stamp = (tiny_llm_folder / "config.json").stat().st_mtime_ns
    again = resolve_llm("embedded:smollm2-135m-instruct", model_cache, "float32")
    assert again == tiny_llm_folder
    assert (again / "config.json").stat().st_mtime_ns == stamp


def test_unknown_embedded_name_and_missing_folder_are_refused(tmp_path: Path):
    with pytest.raises(ModelError, match="unknown embedded model"):
        resolve_llm("embedded:gpt-5", tmp_path)
    with pytest.raises(ModelError, match="never downloads"):
        resolve_llm("THUDM/chatglm-6b", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_llm(str(tmp_path / "empty"), tmp_path)


def test_local_folder_is_used_as_is(tmp_path: Path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_llm(str(folder), tmp_path) == folder


def test_joined_parts_are_checked_against_their_sha256(tmp_path: Path, monkeypatch):
    import hashlib
    import sys
    import types

    for index, payload in enumerate([b"GGUF-part-one|", b"part-two"], start=1):
        part = tmp_path / f"part{index}.bin"
        part.write_bytes(payload)
        module = types.ModuleType(f"fake_part{index}")
        module.get_part_path = lambda p=part: str(p)
        monkeypatch.setitem(sys.modules, f"fake_part{index}", module)
    good_sha = hashlib.sha256(b"GGUF-part-one|part-two").hexdigest()
    model = EmbeddedGGUF("fake", ("fake_part1", "fake_part2"), good_sha, "MIT")
    joined = joined_gguf(model, tmp_path / "cache")
    assert joined.read_bytes() == b"GGUF-part-one|part-two"

    damaged = EmbeddedGGUF("damaged", ("fake_part1", "fake_part2"), "0" * 64, "MIT")
    with pytest.raises(ModelError, match="damaged"):
        joined_gguf(damaged, tmp_path / "cache")
    assert not (tmp_path / "cache" / "gguf" / "damaged.gguf").exists()
    assert not [p for p in os.listdir(tmp_path / "cache" / "gguf") if p.endswith(".part")]

    missing = EmbeddedGGUF("missing", ("no_such_part_module",), None, "MIT")
    with pytest.raises(ModelError, match="not installed"):
        joined_gguf(missing, tmp_path / "cache")
