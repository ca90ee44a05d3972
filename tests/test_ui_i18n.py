"""The web app speaks Chinese by default and English after the sidebar's switch, on every page."""

from __future__ import annotations

import ast
import json
import re
import string
from pathlib import Path

import pytest

from kbqa.ui.i18n import TEXTS
from tests.ui_support import APP, ROOT, app_test, home, write_config

CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
UI_SOURCES = [APP, *sorted((ROOT / "kbqa" / "ui").glob("*.py"))]
PAGES = ["chat", "knowledge", "compare", "evaluation", "settings"]
HEADERS = {"chat": ("问答", "Chat"), "knowledge": ("知识库", "Knowledge bases"),
           "compare": ("对比", "Compare"), "evaluation": ("评测", "Evaluation"),
           "settings": ("设置", "Settings")}


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_text_has_both_languages_with_the_same_fields() -> None:
    for key, (zh, en) in TEXTS.items():
        assert zh.strip() and en.strip(), key
        assert _fields(zh) == _fields(en), key
        assert CJK.search(zh), key  # the Chinese text is Chinese ...
        if key != "app.language":  # ... and the English one is not (but for the switch's label)
            assert not CJK.search(en), key


def test_the_pages_hold_no_text_outside_the_table_and_use_only_its_keys() -> None:
    """Each string the pages show goes through t(): a literal with Chinese in a page is a text
    the English switch would miss, and a t("key") not in the table would fail at run time."""
    used: set[str] = set()
    for path in UI_SOURCES:
        if path.name == "i18n.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings):
                assert not CJK.search(node.value), f"{path.name}:{node.lineno}: {node.value!r}"
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "t" and node.args):
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    used.add(first.value)
                elif isinstance(first, ast.JoinedStr):  # t(f"page.{key}"): its prefix must exist
                    prefix = first.values[0].value if isinstance(first.values[0], ast.Constant) else ""
                    assert any(k.startswith(prefix) for k in TEXTS), f"{path.name}: {prefix}"
    assert used - TEXTS.keys() == set()
    assert len(used) > 100  # the scan found the pages' texts


def _seed(tiny_llm_folder: Path, tmp_path: Path) -> None:
    """A knowledge base with a document, a saved exchange and an evaluation report, so every
    page shows most of what it can (the data itself in ASCII, to tell it from the UI's text)."""
    from kbqa.config import load_settings
    from kbqa.service import KbqaService

    write_config(tiny_llm_folder)
    doc = tmp_path / "docs" / "handbook.md"
    doc.parent.mkdir(parents=True)
    doc.write_text("# Leave\n\nStaff get ten days of paid leave a year.\n", encoding="utf-8")
    svc = KbqaService(load_settings())
    svc.ingest([doc], "default")
    conversation = svc.conversations.create("default")
    turn = svc.conversations.add_turn(conversation.id, "how many days of leave?", "plain")
    turn.answer, turn.state, turn.timings = "ten days", "done", {"first_token": 0.5, "total": 1.0}
    svc.conversations.save_turn(turn)
    report = home() / "eval" / "run1"
    report.mkdir(parents=True)
    (report / "metrics.json").write_text(json.dumps(
        {"plain": {"answer": {"f1": 0.5}, "n": 1}}), encoding="utf-8")


def _ui_texts(at, page: str) -> list[str]:
    """What the page says in its own words: headings, notes, alerts, labels, options, buttons,
    table headers (not the user's data: conversation titles, knowledge base names, paths)."""
    shown = [e.value for kind in ("title", "header", "subheader", "caption", "info", "success",
                                  "warning", "error") for e in getattr(at, kind)]
    shown += [e.label for e in at.expander]
    shown += [b.label for b in at.button if not (b.key or "").startswith("chat_open_")]
    for kind in ("text_input", "text_area", "number_input", "selectbox", "multiselect",
                 "checkbox", "file_uploader"):
        shown += [w.label for w in getattr(at, kind)]
    for radio in at.radio:
        if radio.key != "ui_lang":  # the switch reads "语言 / Language", 中文 and English always
            shown += [radio.label, *radio.options]
    shown += at.selectbox(key="chat_variant").options if page == "chat" else []
    shown += [c.proto.placeholder for c in at.chat_input]
    shown += [str(column) for table in at.table for column in table.value.columns]
    return [text for text in shown if text]


@pytest.mark.parametrize("page", PAGES)
def test_chinese_by_default_english_after_the_switch(page: str, tiny_llm_folder: Path,
                                                     tmp_path: Path) -> None:
    _seed(tiny_llm_folder, tmp_path)
    at = app_test()
    at.query_params["page"] = page
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="ui_lang").value == "zh"
    assert at.header[0].value == HEADERS[page][0]
    chinese = _ui_texts(at, page)
    assert len(chinese) >= 5, chinese
    # what has no Chinese is one word: a model, metric or setting name, a number
    assert not [text for text in chinese if not CJK.search(text) and re.search(r"\s", text)], chinese

    at.radio(key="ui_lang").set_value("en").run()
    assert not at.exception, at.exception
    assert at.header[0].value == HEADERS[page][1]
    assert at.radio(key="page").value == page  # the switch keeps the page
    assert at.query_params["lang"] == "en"  # a reload keeps the language
    english = _ui_texts(at, page)
    assert len(english) == len(chinese), (chinese, english)
    assert not [text for text in english if CJK.search(text)], english

    at.radio(key="ui_lang").set_value("zh").run()
    assert at.header[0].value == HEADERS[page][0] and "lang" not in at.query_params


def test_the_address_can_ask_for_english(tiny_llm_folder: Path) -> None:
    write_config(tiny_llm_folder)
    at = app_test()
    at.query_params["page"] = "settings"
    at.query_params["lang"] = "en"
    at.run()
    assert at.radio(key="ui_lang").value == "en" and at.header[0].value == "Settings"
    assert at.button[0].label == "Save"
