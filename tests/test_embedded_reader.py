"""The default reader: the embedded Qwen2.5-Coder-0.5B with kbqa's shipped LoRA merged in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kbqa.adapters.variants import adapter_fits
from kbqa.errors import ModelError
from kbqa.llm.loading import (
    DEFAULT_LLM,
    EMBEDDED_READERS,
    EmbeddedReader,
    base_model_name,
    embedded_llm_folder,
    merge_reader,
)

ROOT = Path(__file__).resolve().parents[1]
READER = EMBEDDED_READERS[DEFAULT_LLM]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(path)
    return tensors


def test_the_default_is_its_base_plus_exactly_the_readers_lora_delta(
        default_llm_folder: Path, plain_llm_folder: Path) -> None:
    merged, base = _weights(default_llm_folder), _weights(plain_llm_folder)
    adapter = load_file(READER.adapter_folder() / "adapter_model.safetensors")
    config = json.loads((READER.adapter_folder() / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    assert merged.keys() == base.keys()
    changed = set()
    for key, a in adapter.items():
        if ".lora_A." not in key:
            continue
        b = adapter[key.replace(".lora_A.", ".lora_B.")]
        target = key.replace("base_model.model.", "").replace(".lora_A.weight", ".weight")
        delta = (b.float() @ a.float()) * scale
        expected = base[target].float() + delta
        # merged in float32, then rounded once to the folder's dtype: the float32 sums differ
        # only in order (rank r terms), at most r·eps32·(|B|·|A|)·scale + eps32·|W|, and the one
        # rounding moves a value by at most one unit in the last place of that dtype
        eps32 = torch.finfo(torch.float32).eps
        bound = (config["r"] * eps32 * (b.float().abs() @ a.float().abs()) * scale
                 + eps32 * expected.abs())
        ulp = torch.finfo(merged[target].dtype).eps * expected.abs()
        assert bool(((merged[target].float() - expected).abs() <= ulp + bound).all()), target
        assert not torch.equal(merged[target], base[target])
        changed.add(target)
    assert len(changed) == 4 * 24  # q, k, v, o in each of the 24 layers
    for key in merged.keys() - changed:  # everything else is the base's, bit for bit
        assert torch.equal(merged[key], base[key]), key


def test_the_reader_is_made_once_names_its_base_and_keeps_plain_adapters_apart(
        default_llm_folder: Path, model_cache: Path) -> None:
    stamp = (default_llm_folder / "config.json").stat().st_mtime_ns
    assert embedded_llm_folder(DEFAULT_LLM, model_cache) == default_llm_folder
    assert (default_llm_folder / "config.json").stat().st_mtime_ns == stamp
    card = (default_llm_folder / "README.md").read_text(encoding="utf-8")
    assert READER.base in card and "CMRC 2018" in card
    assert base_model_name(str(default_llm_folder)) == f"embedded:{DEFAULT_LLM}"
    assert base_model_name("embedded") == f"embedded:{DEFAULT_LLM}"
    plain_adapter = ROOT / "adapters" / "qwen0.5b-cmrc-direct"
    # an adapter trained on the plain base would be applied twice over the reader's: not listed
    assert adapter_fits(plain_adapter, "embedded") is False
    assert adapter_fits(plain_adapter, f"embedded:{READER.base}") is True


def test_a_reader_whose_adapter_is_missing_is_refused_and_leaves_nothing(
        plain_llm_folder: Path, tmp_path: Path) -> None:
    broken = EmbeddedReader(name="broken", base=READER.base, adapter="no-such-adapter")
    with pytest.raises(ModelError, match="adapter is missing"):
        merge_reader(broken, plain_llm_folder, tmp_path / "models" / "broken-bfloat16", "bfloat16")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_an_unknown_embedded_name_lists_the_reader_and_the_plain_models(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        embedded_llm_folder("nope", tmp_path)
    assert DEFAULT_LLM in str(caught.value) and READER.base in str(caught.value)


@pytest.mark.parametrize("name", sorted(EMBEDDED_READERS))
def test_every_shipped_reader_is_a_lora_for_its_base_with_a_card(name: str) -> None:
    """The package data behind each reader: a LoRA recorded for that reader's base, trained (not
    zero), with a card that names the base, the data and the licence."""
    from kbqa.llm.loading import EMBEDDED_LLMS

    reader = EMBEDDED_READERS[name]
    folder = reader.adapter_folder()
    assert reader.base in EMBEDDED_LLMS
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == "LORA"
    assert config["base_model_name_or_path"] == f"embedded:{reader.base}"
    weights = load_file(folder / "adapter_model.safetensors")
    a_keys = [k for k in weights if ".lora_A." in k]
    assert a_keys and len(weights) == 2 * len(a_keys)
    assert all(weights[k.replace(".lora_A.", ".lora_B.")].abs().max() > 0 for k in a_keys)
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert reader.base in card and "CMRC 2018" in card and "CC BY-SA 4.0" in card


def test_a_merge_of_another_adapter_version_is_made_again(
        tiny_llm_folder: Path, model_cache: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade that ships another adapter must not keep answering with the old merge (and
    the new probe, fitted on the new weights, must not read the old ones)."""
    import shutil

    from safetensors.torch import save_file

    from kbqa.llm import loading

    adapter = tmp_path / "shipped"
    shutil.copytree(ROOT / "adapters" / "smollm2-cmrc-donor", adapter)
    reader = EmbeddedReader(name="tiny-reader", base="smollm2-135m-instruct", adapter=str(adapter))
    monkeypatch.setitem(loading.EMBEDDED_READERS, "tiny-reader", reader)
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / tiny_llm_folder.name).symlink_to(tiny_llm_folder, target_is_directory=True)

    first = embedded_llm_folder("tiny-reader", cache, "float32")
    stamp = (first / "config.json").stat().st_mtime_ns
    assert embedded_llm_folder("tiny-reader", cache, "float32") == first  # same adapter: kept
    assert (first / "config.json").stat().st_mtime_ns == stamp
    before = _weights(first)

    weights = load_file(adapter / "adapter_model.safetensors")  # the "upgrade": B doubled
    save_file({k: v * 2 if ".lora_B." in k else v for k, v in weights.items()},
              str(adapter / "adapter_model.safetensors"))
    again = embedded_llm_folder("tiny-reader", cache, "float32")
    after = _weights(again)
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight",
                                       "o_proj.weight")) for k in changed)

    (again / loading.MERGED_FROM).unlink()  # a merge made before kbqa recorded its adapter
    stamp = (again / "config.json").stat().st_mtime_ns
    assert embedded_llm_folder("tiny-reader", cache, "float32") == again
    assert (again / "config.json").stat().st_mtime_ns != stamp
    assert (again / loading.MERGED_FROM).is_file()
