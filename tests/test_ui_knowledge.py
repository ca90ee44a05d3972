"""Knowledge bases page (AppTest): create, ingest a generated Chinese file, list, remove, re-index;
deleting asks for the name and removing asks again, each saying what it did."""

from __future__ import annotations

from pathlib import Path

from kbqa.kb import folders
from tests.ui_support import app_test, home, texts, write_doc


def _open_page():
    at = app_test()
    at.query_params["page"] = "knowledge"
    return at.run()


def _create(at, name: str):
    at.text_input(key="kb_new_name").input(name)
    [create] = [b for b in at.button if b.label == "创建"]
    create.click().run()
    assert not at.exception, at.exception
    return at


def _kb_selector(at):
    [selector] = [s for s in at.selectbox if s.label == "知识库"]
    return selector


def _delete(at, name: str, typed: str | None):
    at.selectbox(key="kb_delete_name").select(name)
    if typed is not None:
        at.text_input(key="kb_delete_confirm").input(typed)
    [delete] = [b for b in at.button if b.label == "删除知识库"]
    delete.click().run()
    assert not at.exception, at.exception
    return at


def test_create_ingest_list_remove_reindex(tmp_path: Path) -> None:
    doc = write_doc(tmp_path / "docs")
    at = _create(_open_page(), "手册")
    assert "已创建知识库“手册”" in texts(at)
    assert folders.list_names(home() / "kb") == ["手册"]

    at.text_input(key="kb_path").input(str(doc))
    at.button(key="kb_ingest_path").click().run()
    assert not at.exception
    table = at.table[0].value
    assert list(table["状态"]) == ["新增"] and table["片段数"][0] >= 1
    assert "新增 1 个" in texts(at) and "1 个文档" in texts(at)
    docs = at.table[1].value
    assert list(docs["文件"]) == ["员工手册.md"]
    # no path of the server's files: not in the tables, not in the remove selector
    shown = [str(v) for t in at.table for col in t.value.columns for v in t.value[col]]
    shown += at.selectbox(key="kb_remove_doc").options
    assert not [v for v in shown if str(tmp_path) in v or str(home()) in v], shown

    at.button(key="kb_reindex").click().run()
    assert "索引已重建" in texts(at)

    # removing asks first; nothing is removed until confirmed
    at.button(key="kb_remove").click().run()
    assert "1 个文档" in texts(at)
    assert "确认从“手册”移除 员工手册.md" in texts(at)
    at.button(key="kb_remove_yes").click().run()
    assert not at.exception
    assert "这个知识库还没有文档" in texts(at)
    assert "已移除 员工手册.md" in texts(at)  # says what it did
    assert "导入结果" not in texts(at) and not at.table  # the old result is gone


def test_remove_can_be_cancelled(tmp_path: Path) -> None:
    at = _create(_open_page(), "手册")
    at.text_input(key="kb_path").input(str(write_doc(tmp_path / "docs")))
    at.button(key="kb_ingest_path").click().run()
    at.button(key="kb_remove").click().run()
    at.button(key="kb_remove_no").click().run()
    assert "1 个文档" in texts(at) and "确认从" not in texts(at)


def test_bad_name_is_refused(tmp_path: Path) -> None:
    at = _create(_open_page(), "../evil")
    assert at.error and "evil" in at.error[0].value
    assert folders.list_names(home() / "kb") == []


def test_new_knowledge_base_becomes_the_one_in_use(tmp_path: Path) -> None:
    at = _create(_open_page(), "公司制度")
    at.text_input(key="kb_path").input(str(write_doc(tmp_path / "docs")))
    at.button(key="kb_ingest_path").click().run()
    assert "导入结果" in texts(at)
    _create(at, "临时库2")
    # files now go into the new knowledge base, and the old one's result is not shown under it
    assert _kb_selector(at).value == "临时库2"
    assert "上传文件到“临时库2”" in at.subheader[0].value
    assert "这个知识库还没有文档" in texts(at) and "导入结果" not in texts(at)


def test_delete_needs_the_name_typed_every_time(tmp_path: Path) -> None:
    at = _create(_create(_open_page(), "公司制度"), "临时库2")
    _delete(at, "临时库2", typed="临时库2")
    assert folders.list_names(home() / "kb") == ["公司制度"]
    assert "已删除知识库“临时库2”" in texts(at)  # says what it did
    # the confirmation does not carry over to the next knowledge base
    assert at.text_input(key="kb_delete_confirm").value == ""
    _delete(at, "公司制度", typed=None)
    assert folders.list_names(home() / "kb") == ["公司制度"]
    _delete(at, "公司制度", typed="临时库2")  # another name is not a confirmation
    assert folders.list_names(home() / "kb") == ["公司制度"]
    assert "名称不符" in at.error[0].value


def test_upload_shows_a_bar_per_file_with_the_pages_of_a_scan(tmp_path: Path) -> None:
    """Two files uploaded at once: each gets its own bar; the scanned PDF's (read by OCR) says
    how many pages it read, the note's says only that it was added."""
    from tests.doc_samples import image_pdf, render_page

    pages = [render_page([f"第{n}页", "星河扫地机器人R2的保修期为三年。"], dpi=150, width_inches=4)
             for n in (1, 2)]
    scan = image_pdf(tmp_path / "scan.pdf", pages, dpi=150).read_bytes()
    at = _create(_open_page(), "扫描件")
    at.file_uploader(key="kb_upload_扫描件").set_value([
        ("说明.md", "# 说明\n\n扫描件见下。\n".encode(), "text/markdown"),
        ("scan.pdf", scan, "application/pdf")])
    at.run()
    at.button(key="kb_ingest").click().run()
    assert not at.exception, at.exception
    bars = [(bar.value, bar.text) for bar in at.get("progress")]
    assert bars == [(100, "说明.md：新增"), (100, "scan.pdf：已读 2/2 页，新增")]
    assert list(at.table[0].value["状态"]) == ["新增", "新增"]
