"""Training (resumable, answer-only loss), fusing, merging and the `kbqa adapters` CLI."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from kbqa.cli import main
from kbqa.errors import AdapterError
from kbqa.adapters.train import Example, TrainOptions, encode, train_lora
from tests.fusion_models import adapter_delta, save_adapter, save_llama

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tiny_llm_folder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tools")
    folder = save_llama(root / "llama", vocab=49152)  # SmolLM2's vocabulary, random weights
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_llm_folder / name, folder / name)
    return {"model": folder, "a": save_adapter(folder, root / "a", seed=1),
            "b": save_adapter(folder, root / "b", seed=2, r=2)}


def test_encode_masks_the_prompt(tiny_llm_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_folder)
    ids, labels = encode(tokenizer, Example("问题：谁？", "张三"), 64)
    answer = [t for t in labels if t != -100]
    assert len(ids) == len(labels) and answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer[:-1]) == "张三" and labels[0] == -100


def test_training_resumes_from_its_checkpoint(tiny_llm_folder, tmp_path):
    examples = [Example("1+1=?", "2"), Example("2+2=?", "4"), Example("3+3=?", "6")]
    options = TrainOptions(steps=2, save_every=1, max_length=48, rank=2, alpha=4)
    first = train_lora(tiny_llm_folder, examples, tmp_path / "run", options, progress=False)
    assert len(first.losses) == 2 and (tmp_path / "run" / "checkpoint" / "optimizer.safetensors").is_file()
    resumed = train_lora(tiny_llm_folder, examples, tmp_path / "run",
                         TrainOptions(steps=3, save_every=1, max_length=48, rank=2, alpha=4),
                         resume=True, progress=False)
    assert resumed.steps == 3 and resumed.losses[:2] == first.losses
    assert resumed.plot is not None and resumed.plot.is_file()
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(tiny_llm_folder).resolve())


def _model(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def test_cat_fuse_is_the_exact_weighted_sum(llama, tmp_path):
    from kbqa.adapters.fuse import fuse_adapters

    peft_model = fuse_adapters(_model(llama["model"]), [llama["a"], llama["b"]], [0.7, 0.3],
                               method="cat")
    peft_model.save_pretrained(tmp_path, selected_adapters=["fused"])
    module = "model.layers.2.mlp.up_proj"
    expected = 0.7 * adapter_delta(llama["a"], module) + 0.3 * adapter_delta(llama["b"], module)
    torch.testing.assert_close(adapter_delta(tmp_path / "fused", module), expected,
                               atol=1e-5, rtol=0)
    with pytest.raises(AdapterError, match="as many weights"):
        fuse_adapters(_model(llama["model"]), [llama["a"]], [0.5, 0.5])


def test_merge_writes_a_standalone_model_with_the_adapter_logits(llama, tmp_path):
    from peft import PeftModel

    from kbqa.adapters.merge import merge_to_folder

    out = merge_to_folder(llama["model"], [llama["a"]], tmp_path / "merged", dtype="float32")
    probe = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        merged = _model(out)(probe).logits
        adapted = PeftModel.from_pretrained(_model(llama["model"]), llama["a"])(probe).logits
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=0)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_cli_inspect_transplant_verify(llama, tmp_path, capsys):
    assert main(["adapters", "inspect", str(llama["a"]), "--model", str(llama["model"])]) == 0
    shown = capsys.readouterr().out
    assert "tensors: 56" in shown and "model.layers.0.self_attn.q_proj: ‖ΔW‖" in shown
    assert '"family": "llama"' in shown
    out = tmp_path / "moved"
    assert main(["adapters", "transplant", str(llama["a"]), "--target", str(llama["model"]),
                 "--out", str(out), "--layer-map", "interpolate"]) == 0
    assert "llama → llama: 28 modules at rank 4" in capsys.readouterr().out
    assert main(["adapters", "verify", "--model", str(llama["model"]), str(out),
                 "--probe", "hello"]) == 0
    assert "applied" in capsys.readouterr().out
    assert main(["adapters", "verify", "--model", str(llama["model"]),
                 str(tmp_path / "nowhere")]) == 1
    assert "kbqa: error: adapter folder" in capsys.readouterr().err


def test_cli_fuse_writes_one_adapter_that_is_the_weighted_sum(llama, tmp_path, capsys):
    out = tmp_path / "fused"
    assert main(["adapters", "fuse", str(llama["a"]), str(llama["b"]), "--weights", "0.7,0.3",
                 "--model", str(llama["model"]), "--out", str(out)]) == 0
    assert "applied" in capsys.readouterr().out
    assert (out / "adapter_config.json").is_file() and not (out / "fused").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 + 2  # cat: ranks add
    # the base as named, not a folder of peft's choosing; a card that names the parts
    assert config["base_model_name_or_path"] == str(llama["model"].resolve())
    card = (out / "README.md").read_text(encoding="utf-8")
    assert str(llama["a"]) in card and "× 0.7" in card and "More Information Needed" not in card
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.2.mlp.up_proj"):
        expected = 0.7 * adapter_delta(llama["a"], module) + 0.3 * adapter_delta(llama["b"], module)
        torch.testing.assert_close(adapter_delta(out, module), expected, atol=1e-5, rtol=0)
    assert main(["adapters", "fuse", str(llama["a"]), "--weights", "x", "--model",
                 str(llama["model"]), "--out", str(tmp_path / "bad")]) == 1
    assert "--weights must be numbers" in capsys.readouterr().err


def test_cli_merge_writes_a_model_folder(llama, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["adapters", "merge", str(llama["a"]), "--model", str(llama["model"]),
                 "--dtype", "float32", "--out", str(out)]) == 0
    assert f"kbqa ask --llm {out}" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
