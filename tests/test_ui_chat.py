"""Chat page (AppTest): ask a knowledge base with the tiny real LLM, see the answer and its source;
conversations saved per knowledge base, rated, and back after a restart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from kbqa.config import load_settings
from kbqa.qa.prompts import REFUSAL
from kbqa.qa.snippets import highlighted_markdown
from kbqa.service import KbqaService
from tests.ui_support import (
    OTHER_ADAPTERS,
    QUESTION,
    app_test,
    home,
    texts,
    write_config,
    write_doc,
)

FOLLOW_UP = "在公司工作满十年的员工每年享有几天带薪年假？"


@pytest.fixture
def ready(tmp_path: Path, tiny_llm_folder: Path) -> None:
    # 32 tokens: long enough that an answer differs with and without the earlier turn in the
    # prompt (with 8, SmolLM2 answers both the same way)
    write_config(tiny_llm_folder, max_new_tokens=32)
    KbqaService(load_settings()).ingest([write_doc(tmp_path / "docs")], "default")


def _messages(at, author: str) -> list:
    return [message for message in at.chat_message if message.name == author]


def _kb_selector(at):
    """The knowledge base selector, found by its label as the user finds it."""
    [selector] = [s for s in at.selectbox if s.label == "知识库"]
    return selector


def _titles(at) -> list[str]:
    """The saved conversations listed in the sidebar."""
    return [b.label for b in at.button if (b.key or "").startswith("chat_open_")]


def _ask(at, question: str):
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def test_ask_streams_answer_with_source(ready: None, tmp_path: Path) -> None:
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
    assert _kb_selector(at).value == "default"  # the sidebar's knowledge base
    _ask(at, QUESTION)
    [user] = _messages(at, "user")
    [assistant] = _messages(at, "assistant")
    assert [m.value for m in user.markdown] == [QUESTION]  # the question only in the user's turn
    # the assistant's first text is the streamed answer: the service's answer, token for token
    assert assistant.markdown[0].value.strip() == expected.text
    # the source block: one expander per retrieved passage, file · heading · score, the passage
    # text, and no path of the server's files anywhere on the page
    captions = [c.value for c in assistant.caption]
    assert captions[0] == f"来源（{len(expected.sources)}）"
    [source] = assistant.expander
    assert source.label == f"[1] 员工手册.md · 年假制度 · 得分 {expected.sources[0].score:.3f}"
    passage = source.markdown[0].value
    assert "入职满一年的员工每年享有十天带薪年假" in passage  # the fact, from the document
    assert "差旅费用" not in passage  # the other section was not cited
    assert str(tmp_path) not in texts(at) and str(home()) not in texts(at)
    assert "总计 " in captions[-1]  # the timing caption under the answer

    # a second turn keeps the first and sends it as history: again the service's answer (which,
    # for this follow-up, differs from the answer without that history)
    second = expected_service.ask(FOLLOW_UP, "default", history=[(QUESTION, expected.text)])
    assert second.text != expected_service.ask(FOLLOW_UP, "default").text
    _ask(at, FOLLOW_UP)
    assistants = _messages(at, "assistant")
    assert len(assistants) == 2
    assert assistants[0].markdown[0].value.strip() == expected.text  # the first turn, re-shown
    assert assistants[1].markdown[0].value.strip() == second.text
    assert "每年享有十五天带薪年假" in assistants[1].expander[0].markdown[0].value

    # "clear" empties the conversation
    at.button(key="chat_clear").click().run()
    assert not at.exception
    assert not at.chat_message
    assert at.button(key="chat_clear").disabled


def test_clear_is_enabled_after_the_first_exchange(ready: None) -> None:
    at = app_test().run()
    assert at.button(key="chat_clear").disabled  # nothing to clear yet
    _ask(at, QUESTION)
    assert len(_messages(at, "assistant")) == 1
    assert not at.button(key="chat_clear").disabled
    at.button(key="chat_clear").click().run()
    assert not at.chat_message


def test_first_answer_shows_the_model_load_and_the_whole_wait(ready: None) -> None:
    at = _ask(app_test().run(), QUESTION)
    caption = [c.value for c in _messages(at, "assistant")[0].caption][-1]
    found = re.search(r"模型加载 ([\d.]+) 秒 · 首字 ([\d.]+) 秒 · 总计 ([\d.]+) 秒", caption)
    assert found, caption
    load, first, total = map(float, found.groups())
    assert 0 < load <= first <= total  # the first token came after the load, both from the click
    # the model is loaded now: the next answer has no load step
    _ask(at, FOLLOW_UP)
    caption = [c.value for c in _messages(at, "assistant")[1].caption][-1]
    assert "模型加载" not in caption and "总计 " in caption


def test_only_adapters_for_the_loaded_model_are_offered(ready: None) -> None:
    at = app_test().run()
    options = at.selectbox(key="chat_variant").options
    # the tiny LLM is SmolLM2: its own adapter is offered, those made for Qwen are not ...
    assert "适配器：smollm2-cmrc-donor" in options
    assert not [o for o in options if "qwen0.5b" in o], options
    # ... and one sentence says which were left out and why
    [why] = [c.value for c in at.caption if "未列出" in c.value]
    assert OTHER_ADAPTERS and all(adapter.name in why for adapter in OTHER_ADAPTERS), why
    assert "其他基础模型" in why


def test_switching_knowledge_base_switches_the_conversation(ready: None, tmp_path: Path) -> None:
    KbqaService(load_settings()).ingest([write_doc(tmp_path / "other")], "other")
    alone = KbqaService(load_settings()).ask(FOLLOW_UP, "other")
    at = _ask(app_test().run(), QUESTION)
    assert len(_messages(at, "user")) == 1
    _kb_selector(at).select("other").run()
    assert not at.exception
    assert not at.chat_message  # the other knowledge base's (empty) conversation
    _ask(at, FOLLOW_UP)
    # answered without the first knowledge base's exchange in the prompt
    assert [m.markdown[0].value.strip() for m in _messages(at, "assistant")] == [alone.text]
    _kb_selector(at).select("default").run()
    assert [m.markdown[0].value for m in _messages(at, "user")] == [QUESTION]


def test_conversations_are_saved_renamed_deleted_and_rated(ready: None) -> None:
    at = _ask(app_test().run(), QUESTION)
    answer = _messages(at, "assistant")[0].markdown[0].value.strip()
    # 👍 on the answer is stored with its question, answer and sources
    at.feedback(key=at.feedback[0].key).set_value(1).run()
    assert not at.exception

    # a new session (a reload, or the app restarted) lists the conversation and shows it again
    again = app_test().run()
    assert _titles(again) == [QUESTION]  # titled by its first question
    assert [m.markdown[0].value.strip() for m in _messages(again, "assistant")] == [answer]
    assert again.feedback[0].value == 1  # the rating given is shown

    [title] = [t for t in again.text_input if t.key.startswith("chat_title_")]
    title.input("年假问题").run()
    again.button(key="chat_rename").click().run()
    assert _titles(again) == ["年假问题"]
    again.button(key="chat_delete").click().run()
    assert not again.exception
    assert not again.chat_message
    assert "还没有保存的对话" in texts(again) and not _titles(again)
    assert "已删除对话“年假问题”" in texts(again)

    # the rating outlives the conversation, and exports as JSON lines
    from kbqa.conversations import ConversationStore

    [record] = [json.loads(line) for line in
                ConversationStore(home() / "conversations.sqlite3").export_feedback().splitlines()]
    assert record["rating"] == 1 and record["question"] == QUESTION
    assert record["answer"] == answer and record["kb"] == "default"
    assert [s["filename"] for s in record["sources"]] == ["员工手册.md"]


def test_a_table_source_shows_its_header_and_the_row_asked_about(tmp_path: Path,
                                                                 tiny_llm_folder: Path) -> None:
    write_config(tiny_llm_folder)
    sheet = tmp_path / "docs" / "型号参数.csv"
    sheet.parent.mkdir()
    sheet.write_text("型号,最大吸力,续航\n" + "".join(f"星河X{n},{n}000Pa,{n * 10}分钟\n"
                                                  for n in range(1, 9)), encoding="utf-8")
    KbqaService(load_settings()).ingest([sheet], "default")
    question = "星河X3的最大吸力是多少？"
    expected = KbqaService(load_settings()).ask(question, "default")
    at = _ask(app_test().run(), question)
    [assistant] = _messages(at, "assistant")
    source = assistant.expander[0]
    assert source.label.startswith("[1] 型号参数.csv")
    shown = source.markdown[0].value
    # the answer's words in the passage are marked the way highlighted_markdown marks them
    assert shown == highlighted_markdown(expected.sources[0].snippet, expected.text)
    # rendered, it is a table: the header, then the row asked about (not the other seven)
    page = re.sub("</?mark>", "", MarkdownIt("commonmark").enable("table").render(shown))
    assert re.findall("<th>(.*?)</th>", page) == ["型号", "最大吸力", "续航"]
    rows = [re.findall("<td>(.*?)</td>", row) for row in re.findall("<tr>(.*?)</tr>", page, re.DOTALL)]
    assert rows[1:] == [["星河X3", "3000Pa", "30分钟"], ["…", "…", "…"]]


def test_question_outside_the_knowledge_base_shows_refusal(ready: None) -> None:
    at = _ask(app_test().run(), "火星的卫星叫什么名字？")
    shown = texts(at)
    assert REFUSAL in shown
    assert "知识库中没有找到答案" in "\n".join(w.value for w in at.warning)


def test_empty_knowledge_base_says_so(tiny_llm_folder: Path) -> None:
    write_config(tiny_llm_folder)
    KbqaService(load_settings()).create_knowledge_base("空库")
    at = app_test().run()
    assert not at.exception
    assert "知识库“空库”还是空的" in texts(at)


def test_no_knowledge_base_says_so(tiny_llm_folder: Path) -> None:
    write_config(tiny_llm_folder)
    at = app_test().run()
    assert not at.exception
    assert "还没有知识库" in texts(at)


def test_the_answer_shows_the_readers_answerability_and_keeps_it(tmp_path: Path,
                                                                 tiny_llm_folder: Path) -> None:
    """With a probe in the model folder, the caption under the answer gives its probability, and
    the saved conversation shows it again after a restart."""
    import math
    import shutil

    import torch

    from kbqa.llm.answerability import AnswerabilityProbe

    folder = tmp_path / tiny_llm_folder.name
    shutil.copytree(tiny_llm_folder, folder)
    hidden = json.loads((folder / "config.json").read_text(encoding="utf-8"))["hidden_size"]
    AnswerabilityProbe(2, torch.zeros(hidden), torch.ones(hidden), torch.zeros(hidden),
                       torch.tensor([math.log(0.8 / 0.2)]), "test").save(folder)
    write_config(folder)
    KbqaService(load_settings()).ingest([write_doc(tmp_path / "docs")], "default")
    at = _ask(app_test().run(), QUESTION)
    caption = [c.value for c in _messages(at, "assistant")[0].caption][-1]
    assert "总计 " in caption and caption.endswith("可答性 0.80"), caption
    again = app_test().run()  # a new session shows the conversation again, from the store
    assert any(c.value.endswith("可答性 0.80") for c in again.caption), [c.value for c in again.caption]
