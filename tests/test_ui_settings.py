"""Settings page (AppTest): valid values are saved to config.toml, invalid ones refused unwritten."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.ui_support import app_test, home, texts, write_config


def _open(tiny_llm_folder: Path):
    config = write_config(tiny_llm_folder)
    at = app_test()
    at.query_params["page"] = "settings"
    return at.run(), config


def _save(at):
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    return at


def test_valid_settings_are_saved(tiny_llm_folder: Path) -> None:
    at, config = _open(tiny_llm_folder)
    at.number_input(key="set_top_k").set_value(5)
    at.number_input(key="set_temperature").set_value(0.3)
    at.number_input(key="set_history_questions").set_value(2)
    at.selectbox(key="set_grounding").set_value("refuse")
    _save(at)
    assert "已保存到" in texts(at)
    saved = tomllib.loads(config.read_text(encoding="utf-8"))
    assert saved["retrieval"]["top_k"] == 5 and saved["llm"]["temperature"] == 0.3
    assert saved["retrieval"]["history_questions"] == 2
    assert saved["answer"]["grounding"] == "refuse"
    assert saved["llm"]["model"] == str(tiny_llm_folder)


def _in_order(node) -> list:
    """The page's elements in the order they are shown (blocks opened)."""
    found = []
    for child in getattr(node, "children", {}).values():
        found.append(child)
        found += _in_order(child)
    return found


def _error_under(at, key: str) -> str | None:
    """The error shown right under the widget `key` (its field's problem slot), if any."""
    shown = _in_order(at.main)
    [index] = [i for i, e in enumerate(shown) if getattr(e, "key", None) == key]
    after = shown[index + 1]
    return after.value if type(after).__name__ == "Error" else None


def test_invalid_settings_are_refused_and_nothing_is_written(tiny_llm_folder: Path) -> None:
    at, config = _open(tiny_llm_folder)
    before = config.read_bytes()
    missing = str(home() / "no-such-model")
    cases = [("set_top_k", 0, "不能小于 1"),
             ("set_temperature", 5.0, "不能大于 2"),
             ("set_top_p", 0.0, "必须大于 0"),
             ("set_template", "只有 {question}", "提示词模板必须包含 {context} 和 {question}"),
             ("set_llm", missing, f"路径不存在：{missing}"),
             ("set_adapters", "/nonexistent/adapter", "不是 peft 适配器文件夹：/nonexistent/adapter")]
    for key, bad, message in cases:
        at, _ = _open(tiny_llm_folder)
        widget = (at.number_input(key=key) if key in {"set_top_k", "set_temperature", "set_top_p"}
                  else at.text_area(key=key) if key in {"set_template", "set_adapters"}
                  else at.text_input(key=key))
        widget.set_value(bad)
        _save(at)
        assert _error_under(at, key) == message, (key, [e.value for e in at.error])
        assert "设置无效，没有保存" in texts(at)
        assert config.read_bytes() == before, key


def test_each_problem_is_shown_under_its_field_and_the_other_values_stay(
        tiny_llm_folder: Path) -> None:
    at, config = _open(tiny_llm_folder)
    before = config.read_bytes()
    at.number_input(key="set_top_k").set_value(0)
    at.number_input(key="set_temperature").set_value(0.7)  # valid, kept while top-k is fixed
    at.text_area(key="set_adapters").set_value("/nonexistent/adapter")
    _save(at)
    assert _error_under(at, "set_top_k") == "不能小于 1"
    assert _error_under(at, "set_adapters") == "不是 peft 适配器文件夹：/nonexistent/adapter"
    assert _error_under(at, "set_temperature") is None
    assert at.number_input(key="set_temperature").value == 0.7
    assert config.read_bytes() == before
    # in English after the switch, the same problems in English
    at.radio(key="ui_lang").set_value("en").run()
    _save(at)
    assert _error_under(at, "set_top_k") == "must be at least 1"
    assert _error_under(at, "set_adapters") == "not a peft adapter folder: /nonexistent/adapter"
    assert "Invalid settings, nothing saved" in texts(at)
    # fixed, it saves, with the value kept from before
    at.number_input(key="set_top_k").set_value(4)
    at.text_area(key="set_adapters").set_value("")
    _save(at)
    assert not at.error, [e.value for e in at.error]
    saved = tomllib.loads(config.read_text(encoding="utf-8"))
    assert saved["retrieval"]["top_k"] == 4 and saved["llm"]["temperature"] == 0.7
