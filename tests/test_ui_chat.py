"""Chat page (AppTest): ask a knowledge base with the tiny real LLM, see the answer and its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.qa.prompts import REFUSAL
from kbqa.service import KbqaService

from tests.ui_support import QUESTION, app_test, texts, write_config, write_doc


@pytest.fixture
def ready(tmp_path: Path, tiny_llm_folder: Path) -> None:
    write_config(tiny_llm_folder)
    KbqaService(load_settings()).ingest([write_doc(tmp_path / "docs")], "default")


def _messages(at, author: str) -> list:
    return [message for message in at.chat_message if message.name == author]


def test_ask_streams_answer_with_source(ready: None) -> None:
    # What the same tiny LLM answers through the service's own QA path (KbqaService.ask, not the
    # page's stream_variant), in a service of its own. SmolLM2-135M cannot state the fact ("十天")
    # in Chinese, but its greedy answer depends on the prompt: another question, or no passage,
    # gives another answer, so the page must show exactly this one.
    expected_service = KbqaService(load_settings())
    expected = expected_service.ask(QUESTION, "default")
    assert expected.text and not expected.refused
    assert [s.location() for s in expected.sources] == ["员工手册.md · 年假制度"]

    at = app_test().run()
    assert not at.exception
    assert at.selectbox(key="chat_kb").value == "default"
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.exception
    [user] = _messages(at, "user")
    [assistant] = _messages(at, "assistant")
    assert [m.value for m in user.markdown] == [QUESTION]  # the question only in the user's turn
    # the assistant's first text is the streamed answer: the service's answer, token for token
    assert assistant.markdown[0].value.strip() == expected.text
    assert QUESTION not in assistant.markdown[0].value
    # the source block: one expander per retrieved passage, file · heading · score, the passage
    # text and the file's path inside it
    captions = [c.value for c in assistant.caption]
    assert captions[0] == f"来源 / sources ({len(expected.sources)})"
    [source] = assistant.expander
    assert source.label == f"[1] 员工手册.md · 年假制度 · score {expected.sources[0].score:.3f}"
    passage = source.markdown[0].value
    assert "入职满一年的员工每年享有十天带薪年假" in passage  # the fact, from the document
    assert "差旅费用" not in passage  # the other section was not cited
    assert [c.value for c in source.caption] == [expected.sources[0].source]
    assert Path(expected.sources[0].source).name == "员工手册.md"
    assert " total " in captions[-1]  # the timing caption under the answer
    turn = at.session_state["chat_history"][0]
    assert turn["answer"] == expected.text and not turn.get("error")
    assert [s.location() for s in turn["sources"]] == ["员工手册.md · 年假制度"]

    # a second turn keeps the first and sends it as history: again the service's answer (which,
    # for this follow-up, differs from the answer without that history)
    follow_up = "在公司工作满十年的员工每年享有几天带薪年假？"
    second = expected_service.ask(follow_up, "default", history=[(QUESTION, expected.text)])
    assert second.text != expected_service.ask(follow_up, "default").text
    at.chat_input[0].set_value(follow_up).run()
    assert not at.exception
    assert len(at.session_state["chat_history"]) == 2
    assistants = _messages(at, "assistant")
    assert len(assistants) == 2
    assert assistants[0].markdown[0].value.strip() == expected.text  # the first turn, re-shown
    assert assistants[1].markdown[0].value.strip() == second.text
    assert "每年享有十五天带薪年假" in assistants[1].expander[0].markdown[0].value
    at.button(key="chat_clear").click().run()
    assert at.session_state["chat_history"] == []
    assert not at.chat_message


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
