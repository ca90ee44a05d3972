"""Chat page (AppTest): ask a knowledge base with the tiny real LLM, see the answer and its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.prompts import REFUSAL
from kbqa.service import KbqaService

from tests.ui_support import QUESTION, app_test, texts, write_config, write_doc


@pytest.fixture
def ready(tmp_path: Path, tiny_llm_folder: Path) -> None:
    write_config(tiny_llm_folder)
    KbqaService(load_settings()).ingest([write_doc(tmp_path / "docs")], "default")


def test_ask_streams_answer_with_source(ready: None) -> None:
    at = app_test().run()
    assert not at.exception
    assert at.selectbox(key="chat_kb").value == "default"
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.exception
    shown = texts(at)
    assert QUESTION in shown
    assert "员工手册.md · 年假制度" in shown  # the source: file · heading, with its score
    assert "total" in shown  # the timing caption under the answer
    turn = at.session_state["chat_history"][0]
    assert turn["answer"] and turn["sources"] and not turn.get("error")

    # a second turn keeps the first; clear empties the history
    at.chat_input[0].set_value("差旅费用多久内报销？").run()
    assert len(at.session_state["chat_history"]) == 2
    at.button(key="chat_clear").click().run()
    assert at.session_state["chat_history"] == []


def test_question_outside_the_knowledge_base_shows_refusal(ready: None) -> None:
    at = app_test().run()
    at.chat_input[0].set_value("火星的卫星叫什么名字？").run()
    assert not at.exception
    shown = texts(at)
    assert REFUSAL in shown
    assert "Not in the knowledge base" in "\n".join(w.value for w in at.warning)


def test_no_knowledge_base_says_so(tiny_llm_folder: Path) -> None:
    write_config(tiny_llm_folder)
    at = app_test().run()
    assert not at.exception
    assert "No knowledge base yet" in texts(at)
