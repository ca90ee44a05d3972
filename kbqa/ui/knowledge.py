"""Knowledge bases: create, delete, upload and ingest files, list and remove documents, re-index.

The page works on the sidebar's knowledge base. Destructive actions ask first: deleting a
knowledge base needs its name typed (the field empties after every attempt), removing a
document needs a second click naming it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.kb.uploads import supported_suffixes
from kbqa.service import KbqaService
from kbqa.ui.common import current_kb, flash, select_kb, service

RESULTS_KEY = "kb_last_results"
REMOVE_PENDING_KEY = "kb_remove_pending"
STATUS_LABEL = {"added": "added 新增", "updated": "updated 更新", "skipped": "skipped 未变",
                "failed": "failed 失败", "removed": "removed 移除"}


def _forget_results() -> None:
    st.session_state.pop(RESULTS_KEY, None)
    st.session_state.pop(REMOVE_PENDING_KEY, None)


def _manage(svc: KbqaService) -> None:
    # the forms' fields are emptied here, on the run after a submit, not by clear_on_submit: its
    # extra rerun from the browser could replace the run that shows the result message
    if st.session_state.pop("kb_create_reset", False):
        st.session_state["kb_new_name"] = ""
    with st.form("kb_create"):
        name = st.text_input("新知识库名称 / new knowledge base name", key="kb_new_name")
        if st.form_submit_button("创建 / create") and name.strip():
            try:
                svc.create_knowledge_base(name)
            except KbqaError as exc:
                st.error(str(exc))
            else:
                st.session_state["kb_create_reset"] = True
                select_kb(name.strip())  # the new one is the one files now go into
                _forget_results()
                flash("success", f"已创建知识库 / created '{name.strip()}'")
                st.rerun()
    names = svc.list_knowledge_bases()
    if not names:
        return
    with st.expander("删除知识库 / delete a knowledge base"):
        if st.session_state.pop("kb_delete_reset", False):
            st.session_state["kb_delete_confirm"] = ""  # every attempt starts from an empty field
        with st.form("kb_delete_form"):
            doomed = st.selectbox("删除 / delete", names, key="kb_delete_name")
            typed = st.text_input("输入要删除的知识库名称以确认 / type its name to confirm",
                                  key="kb_delete_confirm")
            if st.form_submit_button("删除知识库 / delete"):
                st.session_state["kb_delete_reset"] = True
                if typed.strip() != doomed:
                    flash("error", f"名称不符，没有删除。要删除“{doomed}”及其所有文件，请输入它的"
                          "名称。 The name typed does not match: nothing was deleted.")
                    st.rerun()
                try:
                    svc.delete_knowledge_base(doomed)
                except KbqaError as exc:
                    flash("error", str(exc))
                    st.rerun()
                _forget_results()
                flash("success", f"已删除知识库 / deleted '{doomed}'")
                st.rerun()


def _show_results(kb: str) -> None:
    results = st.session_state.get(RESULTS_KEY)
    if not results or results["kb"] != kb:
        return
    rows = results["rows"]
    counts = {status: sum(r["status"] == label for r in rows)
              for status, label in STATUS_LABEL.items()}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    (st.warning if counts["failed"] else st.success)(f"导入结果 / ingest result: {summary}")
    st.table(rows)


def _upload(svc: KbqaService, kb: str) -> None:
    suffixes = sorted(s.lstrip(".") for s in supported_suffixes())
    limit = svc.settings.kb.max_file_mb
    st.subheader(f"上传文件到“{kb}” / upload files")
    files = st.file_uploader(f"支持 / supported: {' '.join(suffixes)} · ≤ {limit} MB each",
                             type=suffixes, accept_multiple_files=True, key=f"kb_upload_{kb}")
    if st.button("导入 / ingest", key="kb_ingest", disabled=not files, type="primary"):
        bar = st.progress(0.0, text="ingesting…")

        def progress(done: int, total: int, name: str) -> None:
            text = f"{done}/{total} {name}" if name else f"{done}/{total} done"
            bar.progress(done / max(total, 1), text=text)

        uploads = [(f.name, f.getvalue()) for f in files]
        outcomes = svc.ingest_uploads(kb, uploads, on_progress=progress)
        st.session_state[RESULTS_KEY] = {"kb": kb, "rows": [
            {"file": o.name, "stored as": o.stored_name or "–",
             "status": STATUS_LABEL.get(o.status, o.status), "chunks": o.chunks,
             "reason": o.error or ""} for o in outcomes]}
    with st.expander("从服务器路径导入 / ingest a file or folder on this machine"):
        path = st.text_input("路径 / path", key="kb_path")
        if st.button("导入路径 / ingest path", key="kb_ingest_path") and path.strip():
            with st.spinner("ingesting…"):
                try:
                    results = svc.ingest([Path(path.strip()).expanduser()], kb)
                    st.session_state[RESULTS_KEY] = {"kb": kb, "rows": [
                        {"file": Path(r.path).name, "stored as": "–",
                         "status": STATUS_LABEL.get(r.status, r.status), "chunks": r.chunks,
                         "reason": r.error or ""} for r in results]}
                except KbqaError as exc:
                    st.error(str(exc))
    _show_results(kb)


def _documents(svc: KbqaService, kb: str) -> None:
    st.subheader("文档 / documents")
    try:
        docs = svc.knowledge_base(kb).documents()
    except KbqaError as exc:
        st.error(str(exc))
        return
    if not docs:
        st.caption("这个知识库还没有文档 / no documents yet")
    else:
        st.caption(f"{len(docs)} document(s), {sum(d.chunks for d in docs)} chunks")
        st.table([{"file": d.filename, "chunks": d.chunks, "updated": d.updated_at}
                  for d in docs])
        by_source = {d.source: d for d in docs}
        names = [d.filename for d in docs]
        cols = st.columns([3, 1])
        chosen = cols[0].selectbox(
            "移除文档 / remove a document", list(by_source), key="kb_remove_doc",
            format_func=lambda source: by_source[source].filename + (
                f" ({Path(source).parent.name})" if names.count(by_source[source].filename) > 1
                else ""))
        if cols[1].button("移除 / remove", key="kb_remove"):
            st.session_state[REMOVE_PENDING_KEY] = (kb, chosen)
        pending = st.session_state.get(REMOVE_PENDING_KEY)
        if pending and pending[0] == kb and pending[1] in by_source:
            doc = by_source[pending[1]]
            st.warning(f"确认从“{kb}”移除 {doc.filename}（{doc.chunks} 个片段）？ "
                       f"Remove {doc.filename} from this knowledge base?")
            yes, no = st.columns(2)
            if yes.button("确认移除 / yes, remove", key="kb_remove_yes", type="primary"):
                try:
                    count = svc.remove_document(kb, doc.source)
                except KbqaError as exc:
                    st.error(str(exc))
                else:
                    _forget_results()
                    flash("success", f"已移除 / removed {doc.filename} ({count} chunks)")
                    st.rerun()
            if no.button("取消 / cancel", key="kb_remove_no"):
                st.session_state.pop(REMOVE_PENDING_KEY, None)
                st.rerun()
    if st.button("重建索引 / re-index", key="kb_reindex", disabled=not docs):
        with st.spinner("rebuilding the index…"):
            try:
                svc.knowledge_base(kb).rebuild_index()
                st.success("index rebuilt")
            except KbqaError as exc:
                st.error(str(exc))


def render() -> None:
    svc = service()
    st.header("知识库 / Knowledge bases")
    _manage(svc)
    kb = current_kb(svc)
    if kb is None:
        return
    _upload(svc, kb)
    _documents(svc, kb)
