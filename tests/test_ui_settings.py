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
    _save(at)
    assert "saved to" in texts(at)
    saved = tomllib.loads(config.read_text(encoding="utf-8"))
    assert saved["retrieval"]["top_k"] == 5 and saved["llm"]["temperature"] == 0.3
    assert saved["llm"]["model"] == str(tiny_llm_folder)


def test_invalid_settings_are_refused_and_nothing_is_written(tiny_llm_folder: Path) -> None:
    at, config = _open(tiny_llm_folder)
    before = config.read_bytes()
    cases = [("set_top_k", 0, "top_k"),
             ("set_temperature", 5.0, "temperature"),
             ("set_template", "只有 {question}", "prompt template must use {context}"),
             ("set_llm", str(home() / "no-such-model"), "does not exist"),
             ("set_adapters", "/nonexistent/adapter", "not a peft adapter folder")]
    for key, bad, message in cases:
        at, _ = _open(tiny_llm_folder)
        widget = (at.number_input(key=key) if key in {"set_top_k", "set_temperature"}
                  else at.text_area(key=key) if key in {"set_template", "set_adapters"}
                  else at.text_input(key=key))
        widget.set_value(bad)
        _save(at)
        assert at.error, key
        assert "invalid settings" in at.error[0].value and message in at.error[0].value, \
            at.error[0].value
        assert config.read_bytes() == before, key
