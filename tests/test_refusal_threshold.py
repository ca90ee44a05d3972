"""The first-token refusal threshold (kbqa.llm.refusal) on a real small model."""

from __future__ import annotations

import pytest

from kbqa.config import load_settings
from kbqa.errors import ConfigError
from kbqa.qa.prompts import REFUSAL

PROMPT = "What is the capital of France? Answer in one word."


@pytest.fixture
def llm(tiny_llm):
    return tiny_llm.model_copy(update={"prefix_cache": None, "refusal": REFUSAL,
                                       "refusal_bias": 0.0, "max_new_tokens": 48})


def _generate(llm, **kwargs) -> tuple[str, dict]:
    generation = llm.generate([PROMPT], **kwargs).generations[0][0]
    return generation.text, generation.generation_info or {}


def test_bias_zero_records_the_margin_and_changes_nothing(tiny_llm, llm) -> None:
    plain = tiny_llm.model_copy(update={"prefix_cache": None})
    text, info = _generate(llm)
    assert text == _generate(plain)[0]
    assert "refusal_margin" not in _generate(plain)[1]
    assert isinstance(info["refusal_margin"], float)
    assert info["refusal_margin"] > 0  # an English model does not start a Chinese refusal


def test_a_bias_above_the_margin_gives_the_refusal_and_one_below_it_the_answer(llm) -> None:
    text, info = _generate(llm)
    margin = info["refusal_margin"]
    above, above_info = _generate(llm.model_copy(update={"refusal_bias": margin + 0.01}))
    assert above == REFUSAL
    assert above_info["finish_reason"] == "stop"
    assert above_info["refusal_margin"] == pytest.approx(margin)
    below, _ = _generate(llm.model_copy(update={"refusal_bias": margin - 0.01}))
    assert below == text != REFUSAL


def test_the_refusal_streams_whole_and_a_call_can_set_its_own_bias(llm) -> None:
    margin = _generate(llm)[1]["refusal_margin"]
    assert "".join(llm.stream(PROMPT, refusal_bias=margin + 1.0)) == REFUSAL
    assert llm.invoke(PROMPT, refusal_bias=margin + 1.0) == REFUSAL


def test_the_setting_reaches_the_model_and_a_negative_bias_is_refused(tmp_path) -> None:
    settings = load_settings({"home": tmp_path, "refusal_bias": 2.5})
    assert settings.llm.refusal_bias == 2.5
    with pytest.raises(ConfigError):
        load_settings({"home": tmp_path, "refusal_bias": -1})
