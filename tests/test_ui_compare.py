"""Compare page (AppTest): the same context, plain and adapter answers side by side."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.service import KbqaService
from tests.ui_support import (
    DONOR_ADAPTER,
    OTHER_ADAPTERS,
    QUESTION,
    app_test,
    texts,
    write_config,
    write_doc,
)


@pytest.mark.skipif(not DONOR_ADAPTER.is_dir(), reason="adapters/smollm2-cmrc-donor is missing")
def test_compare_shows_two_answers_and_applied(tmp_path: Path, tiny_llm_folder: Path) -> None:
    write_config(tiny_llm_folder, adapters=[str(DONOR_ADAPTER)])
    KbqaService(load_settings()).ingest([write_doc(tmp_path / "docs")], "default")
    at = app_test()
    at.query_params["page"] = "compare"
    at.run()
    assert not at.exception
    assert at.multiselect(key="compare_variants").value == ["adapter: smollm2-cmrc-donor"]
    # only the adapter made for the loaded model (SmolLM2) is offered; the Qwen ones are named
    # in one sentence instead
    assert at.multiselect(key="compare_variants").options == ["适配器：smollm2-cmrc-donor"]
    assert any(f"未列出 {len(OTHER_ADAPTERS)} 个适配器" in c.value for c in at.caption)
    at.text_input(key="compare_question").input(QUESTION)
    at.button(key="compare_go").click().run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "**plain**" in shown and "**smollm2-cmrc-donor**" in shown
    assert shown.count("总计") == 2  # a timing under each answer
    assert any("适配器已生效" in s.value for s in at.success)
    assert "员工手册.md · 年假制度" in shown  # the shared context, shown once
    result = at.session_state["compare_result"]
    assert [a.variant.label for a in result["answers"]] == ["plain", "smollm2-cmrc-donor"]
    assert all(a.text and not a.error for a in result["answers"])


@pytest.mark.skipif(not DONOR_ADAPTER.is_dir(), reason="adapters/smollm2-cmrc-donor is missing")
def test_compare_marks_the_chosen_answer_in_the_shared_context(tmp_path: Path,
                                                              tiny_llm_folder: Path) -> None:
    """As on the chat page: the passage's run of an answer is marked; the radio picks whose."""
    from dataclasses import replace

    write_config(tiny_llm_folder)
    KbqaService(load_settings()).ingest([write_doc(tmp_path / "docs")], "default")
    at = app_test()
    at.query_params["page"] = "compare"
    at.run()
    at.text_input(key="compare_question").input(QUESTION)
    at.button(key="compare_go").click().run()
    assert not at.exception, at.exception
    # the compare ran for real; its adapter answer is now one that quotes the passage (the tiny
    # model's own rarely does), the plain one one that does not
    result = at.session_state["compare_result"]
    plain, adapter = result["answers"]
    quoted = "入职满一年的员工每年享有十天带薪年假。"
    result["answers"] = [replace(plain, text="不知道"), replace(adapter, text=f"答：{quoted}")]
    at.session_state["compare_result"] = result
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="compare_mark").value == 1  # the adapter's answer, by default

    def marks() -> list[str]:
        return [m for e in at.markdown for m in re.findall("<mark>(.*?)</mark>", e.value)]

    assert marks() == [quoted]
    at.radio(key="compare_mark").set_value(0).run()
    assert marks() == []
