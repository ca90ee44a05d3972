"""Compare page (AppTest): the same context, plain and adapter answers side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.service import KbqaService
from tests.ui_support import (
    DONOR_ADAPTER,
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
    assert any("未列出 2 个适配器" in c.value for c in at.caption)
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
