"""The answerability probe (kbqa.llm.answerability): strict loading, reading the right layer's
state during generation, and refusing below the floor, on a real small model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kbqa.config import load_settings
from kbqa.errors import ConfigError, ModelError
from kbqa.llm.answerability import PROBE_FILE, AnswerabilityProbe
from kbqa.qa.prompts import REFUSAL

PROMPT = "What is the capital of France? Answer in one word."


def _probe(hidden: int, layer: int, *, unit: int | None = None, p: float = 0.5) -> AnswerabilityProbe:
    """A probe reading one coordinate of the state (`unit`), or a constant probability `p`."""
    weight = torch.zeros(hidden)
    if unit is not None:
        weight[unit] = 1.0
    bias = torch.tensor([0.0 if unit is not None else math.log(p / (1 - p))])
    return AnswerabilityProbe(layer, torch.zeros(hidden), torch.ones(hidden), weight, bias, "test")


@pytest.fixture
def llm(tiny_llm):
    return tiny_llm.model_copy(update={"prefix_cache": None, "refusal": REFUSAL,
                                       "max_new_tokens": 24})


def _generate(llm) -> tuple[str, dict]:
    generation = llm.generate([PROMPT]).generations[0][0]
    return generation.text, generation.generation_info or {}


def _state(llm, layer: int) -> torch.Tensor:
    """hidden_states[layer] at the rendered prompt's last token, from one plain forward pass."""
    ids = llm.tokenizer(llm.render(PROMPT), return_tensors="pt",
                        add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        output = llm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    return output.hidden_states[layer][0, -1].float()


@pytest.mark.numerics
@pytest.mark.parametrize("layer", [1, 15, 30])  # the first layer, a middle one, the final norm
def test_the_probe_reads_the_prompts_state_at_its_layer(llm, layer) -> None:
    """During generate() the probe sees hidden_states[layer] of the prompt's last token. The probe
    is centred on that state (z = 0, p = 0.5 exactly there) and points at the neighbouring
    layer's state (z = 1 there, p = 0.731). Both paths compute in float32 with other kernels
    (kbqa's attention and cache against transformers' own): relative rounding of the order of
    1e-5 over ≤ 1,536-term dot products and ≤ 30 layers, far inside the 1e-3 allowed on p."""
    hidden = llm.model.config.hidden_size
    state = _state(llm, layer)
    neighbour = _state(llm, layer - 1)
    step = neighbour - state
    probe = AnswerabilityProbe(layer, state, torch.ones(hidden), step / step.dot(step),
                               torch.zeros(1))
    _, info = _generate(llm.model_copy(update={"answerability_probe": probe}))
    assert info["answerability"] == pytest.approx(0.5, abs=1e-3)
    assert probe.probability(neighbour) == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-6)


def test_below_the_floor_the_refusal_is_given_and_at_zero_nothing_changes(llm) -> None:
    hidden = llm.model.config.hidden_size
    text, info = _generate(llm)
    assert "answerability" not in info  # no probe, nothing recorded
    probed = llm.model_copy(update={"answerability_probe": _probe(hidden, 10, p=0.3)})
    same, info = _generate(probed)
    assert same == text != REFUSAL and info["answerability"] == pytest.approx(0.3)
    refused = probed.model_copy(update={"min_answerability": 0.5})
    assert _generate(refused)[0] == REFUSAL
    assert "".join(refused.stream(PROMPT)) == REFUSAL  # streaming reads it too
    assert probed.invoke(PROMPT, min_answerability=0.5) == REFUSAL  # and a call may set its own
    assert _generate(probed.model_copy(update={"min_answerability": 0.2}))[0] == text


def test_a_probe_is_loaded_strictly(tmp_path: Path) -> None:
    probe = _probe(8, 3, unit=2)
    path = probe.save(tmp_path)
    assert path.name == PROBE_FILE
    again = AnswerabilityProbe.load(path, hidden_size=8, num_layers=4)
    assert again.layer == 3 and torch.equal(again.weight, probe.weight)
    with pytest.raises(ModelError, match="shapes"):
        AnswerabilityProbe.load(path, hidden_size=16, num_layers=4)
    with pytest.raises(ModelError, match="layer 3"):
        AnswerabilityProbe.load(path, hidden_size=8, num_layers=2)
    save_file({"mean": torch.zeros(8), "weight": torch.zeros(8), "bias": torch.zeros(1)},
              str(tmp_path / "missing.safetensors"), metadata={"layer": "1"})
    with pytest.raises(ModelError, match="expected"):
        AnswerabilityProbe.load(tmp_path / "missing.safetensors", hidden_size=8, num_layers=4)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read"):
        AnswerabilityProbe.load(tmp_path / "junk.safetensors", hidden_size=8, num_layers=4)


def test_the_setting_is_a_probability(tmp_path) -> None:
    assert load_settings({"home": tmp_path, "min_answerability": 0.4}).llm.min_answerability == 0.4
    with pytest.raises(ConfigError):
        load_settings({"home": tmp_path, "min_answerability": 1.5})


HANDBOOK = ("星河科技员工手册 第三章 休假\n员工每年享有带薪年假10天，入职满五年后增加至15天。"
            "年假须提前三个工作日在OA系统中申请，由直属主管审批。")
SICK_LEAVE = ("星河科技员工手册 第四章 病假\n员工因病休假须提供二级以上医院的证明。"
              "病假期间工资按基本工资的80%发放，每年累计不超过30天。")


@pytest.mark.slow
def test_the_default_reader_ships_a_probe_that_tells_a_missing_answer(default_llm_folder,
                                                                      tmp_path) -> None:
    """Written for this test (not from CMRC or the company set): the same question over the
    passage that answers it and over a same-topic passage that does not, on the bf16 reader. A
    probe on the wrong layer or weights scores noise."""
    from langchain_core.documents import Document

    from kbqa.models import Models
    from kbqa.qa.prompts import build_prompt, format_context

    settings = load_settings({"home": tmp_path, "llm": str(default_llm_folder)}, environ={})
    llm = Models(settings).llm.model_copy(update={"prefix_cache": None, "max_new_tokens": 16})
    # the layer the cross-validated search chose for the shipped reader (docs/benchmarks.md §16)
    assert llm.answerability_probe is not None and llm.answerability_probe.layer == 13
    template = build_prompt(settings.answer.prompt_template)
    question = "入职满五年后年假有多少天？"
    found = {}
    for name, text in (("answer", HANDBOOK), ("missing", SICK_LEAVE)):
        prompt = template.format(context=format_context([Document(text, metadata={
            "source": "handbook.md"})]), question=question, history="")
        found[name] = llm.generate([prompt]).generations[0][0].generation_info["answerability"]
    assert found["answer"] > 0.5 > 0.3 > found["missing"], found  # the suggested floor: 0.3


def test_the_server_reports_the_probability_to_clients(tmp_path: Path, tiny_llm_folder) -> None:
    """The OpenAI-compatible answer carries `answerability` (whole and in a stream's last chunk)
    when the model folder holds a probe, and leaves the field out when it holds none."""
    import shutil

    import openai

    from tests.serve_support import kbqa_server
    from tests.ui_support import QUESTION

    folder = tmp_path / tiny_llm_folder.name  # the name tells the server which base it is
    shutil.copytree(tiny_llm_folder, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    _probe(config["hidden_size"], 2, p=0.8).save(folder)
    with kbqa_server(tmp_path / "home", folder) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.hr_key, max_retries=0)
        ask = {"model": "plain", "messages": [{"role": "user", "content": QUESTION}],
               "extra_body": {"kb": "hr"}}
        whole = client.chat.completions.create(**ask)
        assert whole.model_extra["answerability"] == pytest.approx(0.8, abs=1e-4)
        *_, last = client.chat.completions.create(**ask, stream=True)
        assert last.choices[0].finish_reason and last.model_extra["answerability"] == pytest.approx(0.8, abs=1e-4)
        (folder / PROBE_FILE).unlink()
    with kbqa_server(tmp_path / "home2", folder) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.hr_key, max_retries=0)
        assert "answerability" not in client.chat.completions.create(**ask).model_extra
