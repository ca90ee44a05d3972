"""Knowledge bases: create, delete, upload and ingest files, list and remove documents, re-index."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.ui.common import service
from kbqa.kb.uploads import supported_suffixes

RESULTS_KEY = "kb_last_results"
STATUS_LABEL = {"added": "added 新增", "updated": "updated 更新", "skipped": "skipped 未变",
                "failed": "failed 失败", "removed": "removed 移除"}


def _manage(svc) -> None:
    with st.expander("新建或删除知识库 / create or delete a knowledge base",
                     expanded=not svc.list_knowledge_bases()):
        with st.form("kb_create", clear_on_submit=True):
            name = st.text_input("新知识库名称 / new knowledge base name", key="kb_new_name")
            if st.form_submit_button("创建 / create") and name.strip():
                try:
                    svc.create_knowledge_base(name)
                    st.success(f"created '{name.strip()}'")
                except KbqaError as exc:
                    st.error(str(exc))
        names = svc.list_knowledge_bases()
        if names:
            doomed = st.selectbox("删除 / delete", names, key="kb_delete_name")
            sure = st.checkbox(f"确认删除 '{doomed}' 及其所有文件 / yes, delete it and its files",
                               key="kb_delete_sure")
            if st.button("删除知识库 / delete", key="kb_delete", disabled=not sure):
                try:
                    svc.delete_knowledge_base(doomed)
                    st.success(f"deleted '{doomed}'")
                    st.session_state.pop("kb_delete_sure", None)
                    st.rerun()
                except KbqaError as exc:
                    st.error(str(exc))


def _show_results(results: list[dict]) -> None:
    if not results:
        return
    counts = {status: sum(r["status"] == label for r in results)
              for status, label in STATUS_LABEL.items()}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    (st.warning if counts["failed"] else st.success)(f"导入结果 / ingest result: {summary}")
    st.table(results)


def _upload(svc, kb: str) -> None:
    suffixes = sorted(s.lstrip(".") for s in supported_suffixes())
    limit = svc.settings.kb.max_file_mb
    st.subheader("上传文件 / upload files")
    files = st.file_uploader(f"支持 / supported: {' '.join(suffixes)} · ≤ {limit} MB each",
                             type=suffixes, accept_multiple_files=True, key=f"kb_upload_{kb}")
    if st.button("导入 / ingest", key="kb_ingest", disabled=not files, type="primary"):
        bar = st.progress(0.0, text="ingesting…")

        def progress(done: int, total: int, name: str) -> None:
            text = f"{done}/{total} {name}" if name else f"{done}/{total} done"
            bar.progress(done / max(total, 1), text=text)

        uploads = [(f.name, f.getvalue()) for f in files]
        outcomes = svc.ingest_uploads(kb, uploads, on_progress=progress)
        st.session_state[RESULTS_KEY] = [
            {"file": o.name, "stored as": o.stored_name or "–",
             "status": STATUS_LABEL.get(o.status, o.status), "chunks": o.chunks,
             "reason": o.error or ""} for o in outcomes]
    with st.expander("从服务器路径导入 / ingest a file or folder on this machine"):
        path = st.text_input("路径 / path", key="kb_path")
        if st.button("导入路径 / ingest path", key="kb_ingest_path") and path.strip():
            with st.spinner("ingesting…"):
                try:
                    results = svc.ingest([Path(path.strip()).expanduser()], kb)
                    st.session_state[RESULTS_KEY] = [
                        {"file": str(r.path), "stored as": "–",
                         "status": STATUS_LABEL.get(r.status, r.status), "chunks": r.chunks,
                         "reason": r.error or ""} for r in results]
                except KbqaError as exc:
                    st.error(str(exc))
    _show_results(st.session_state.get(RESULTS_KEY, []))


def _documents(svc, kb: str) -> None:
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
        st.table([{"file": d.filename, "chunks": d.chunks, "updated": d.updated_at,
                   "source": d.source} for d in docs])
        by_label = {f"{d.filename} — {d.source}": d.source for d in docs}
        cols = st.columns([3, 1])
        label = cols[0].selectbox("移除文档 / remove a document", list(by_label), key="kb_remove_doc")
        if cols[1].button("移除 / remove", key="kb_remove"):
            try:
                count = svc.remove_document(kb, by_label[label])
                st.success(f"removed {label.split(' — ')[0]} ({count} chunks)")
                st.rerun()
            except KbqaError as exc:
                st.error(str(exc))
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
    names = svc.list_knowledge_bases()
    if not names:
        return
    default = names.index(svc.settings.kb.name) if svc.settings.kb.name in names else 0
    kb = st.selectbox("知识库 / knowledge base", names, index=default, key="kb_selected")
    _upload(svc, kb)
    _documents(svc, kb)
