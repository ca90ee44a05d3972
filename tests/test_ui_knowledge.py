"""Knowledge bases page (AppTest): create, ingest a generated Chinese file, list, remove, re-index."""

from __future__ import annotations

from pathlib import Path

from kbqa.kb import folders

from tests.ui_support import app_test, home, texts, write_doc


def _open_page():
    at = app_test()
    at.query_params["page"] = "knowledge"
    return at.run()


def test_create_ingest_list_remove_reindex(tmp_path: Path) -> None:
    doc = write_doc(tmp_path / "docs")
    at = _open_page()
    assert not at.exception
    at.text_input(key="kb_new_name").input("手册")
    at.button[0].click().run()  # the form's submit button
    assert "created '手册'" in texts(at)
    assert folders.list_names(home() / "kb") == ["手册"]

    at.text_input(key="kb_path").input(str(doc))
    at.button(key="kb_ingest_path").click().run()
    assert not at.exception
    table = at.table[0].value
    assert list(table["status"]) == ["added 新增"] and table["chunks"][0] >= 1
    assert "1 added" in texts(at) and "1 document(s)" in texts(at)
    docs = at.table[1].value
    assert list(docs["file"]) == ["员工手册.md"]

    at.button(key="kb_reindex").click().run()
    assert "index rebuilt" in texts(at)

    at.button(key="kb_remove").click().run()
    assert not at.exception
    assert "no documents yet" in texts(at)


def test_bad_name_is_refused(tmp_path: Path) -> None:
    at = _open_page()
    at.text_input(key="kb_new_name").input("../evil")
    at.button[0].click().run()
    assert at.error and "evil" in at.error[0].value
    assert folders.list_names(home() / "kb") == []


def test_delete_knowledge_base(tmp_path: Path) -> None:
    at = _open_page()
    at.text_input(key="kb_new_name").input("temp")
    at.button[0].click().run()
    at.checkbox(key="kb_delete_sure").check().run()
    at.button(key="kb_delete").click().run()
    assert not at.exception
    assert folders.list_names(home() / "kb") == []
