"""Knowledge bases: create, delete, upload and ingest files, list and remove documents, re-index.

The page works on the sidebar's knowledge base. Destructive actions ask first: deleting a
knowledge base needs its name typed (the field empties after every attempt), removing a
document needs a second click naming it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.kb.uploads import UploadOutcome, supported_suffixes
from kbqa.qa.snippets import escape_markdown
from kbqa.service import KbqaService
from kbqa.ui.common import current_kb, flash, original_file, select_kb, service
from kbqa.ui.i18n import t

RESULTS_KEY = "kb_last_results"
REMOVE_PENDING_KEY = "kb_remove_pending"
STATUSES = ("added", "updated", "skipped", "failed", "removed")  # rows keep these; shown translated
COLUMNS = {"file": "kb.col.file", "stored as": "kb.col.stored_as", "status": "kb.col.status",
           "chunks": "kb.col.chunks", "reason": "kb.col.reason"}


def _forget_results() -> None:
    st.session_state.pop(RESULTS_KEY, None)
    st.session_state.pop(REMOVE_PENDING_KEY, None)


def _manage(svc: KbqaService) -> None:
    # the forms' fields are emptied here, on the run after a submit, not by clear_on_submit: its
    # extra rerun from the browser could replace the run that shows the result message
    if st.session_state.pop("kb_create_reset", False):
        st.session_state["kb_new_name"] = ""
    with st.form("kb_create"):
        name = st.text_input(t("kb.new_name"), key="kb_new_name")
        if st.form_submit_button(t("kb.create")) and name.strip():
            try:
                svc.create_knowledge_base(name)
            except KbqaError as exc:
                st.error(str(exc))
            else:
                st.session_state["kb_create_reset"] = True
                select_kb(name.strip())  # the new one is the one files now go into
                _forget_results()
                flash("success", t("kb.created", name=name.strip()))
                st.rerun()
    names = svc.list_knowledge_bases()
    if not names:
        return
    with st.expander(t("kb.delete_section")):
        if st.session_state.pop("kb_delete_reset", False):
            st.session_state["kb_delete_confirm"] = ""  # every attempt starts from an empty field
        with st.form("kb_delete_form"):
            doomed = st.selectbox(t("kb.delete_pick"), names, key="kb_delete_name")
            typed = st.text_input(t("kb.delete_confirm"), key="kb_delete_confirm")
            if st.form_submit_button(t("kb.delete")):
                st.session_state["kb_delete_reset"] = True
                if typed.strip() != doomed:
                    flash("error", t("kb.delete_mismatch", name=doomed))
                    st.rerun()
                try:
                    svc.delete_knowledge_base(doomed)
                except KbqaError as exc:
                    flash("error", str(exc))
                    st.rerun()
                _forget_results()
                flash("success", t("kb.deleted", name=doomed))
                st.rerun()


def _show_results(kb: str) -> None:
    results = st.session_state.get(RESULTS_KEY)
    if not results or results["kb"] != kb:
        return
    rows = results["rows"]
    counts = {status: sum(r["status"] == status for r in rows) for status in STATUSES}
    summary = ", ".join(t("kb.result_part", status=t(f"kb.status.{status}"), count=n)
                        for status, n in counts.items() if n)
    (st.warning if counts["failed"] else st.success)(t("kb.result", summary=summary))
    st.table([{t(COLUMNS[k]): (t(f"kb.status.{v}") if k == "status" and v in STATUSES else v)
               for k, v in row.items()} for row in rows])


def _ingest_with_bars(svc: KbqaService, kb: str,
                      uploads: list[tuple[str, bytes]]) -> list[UploadOutcome]:
    """Ingest the uploads with a bar per file; a PDF's or an image's bar moves page by page (OCR
    of a scan takes seconds a page)."""
    bars = [st.progress(0.0, text=t("kb.file_waiting", file=name)) for name, _ in uploads]
    pages: dict[int, tuple[int, int]] = {}  # file index -> (pages read, pages in all)
    current = [0]

    def on_file(done: int, _total: int, name: str) -> None:
        if name:
            current[0] = done
            bars[done].progress(0.0, text=t("kb.file_ingesting", file=name))

    def on_page(done: int, total: int) -> None:
        index = current[0]
        pages[index] = (done, total)
        bars[index].progress(done / max(total, 1), text=t("kb.file_pages", file=uploads[index][0],
                                                          done=done, total=total))

    outcomes = svc.ingest_uploads(kb, uploads, on_progress=on_file, on_page=on_page)
    for index, (bar, outcome) in enumerate(zip(bars, outcomes, strict=True)):
        status = (t(f"kb.status.{outcome.status}") if outcome.status in STATUSES
                  else outcome.status)
        if index in pages:
            done, total = pages[index]
            text = t("kb.file_done_pages", file=outcome.name, done=done, total=total, status=status)
        else:
            text = t("kb.file_done", file=outcome.name, status=status)
        bar.progress(1.0, text=text)
    return outcomes


def _upload(svc: KbqaService, kb: str) -> None:
    suffixes = sorted(s.lstrip(".") for s in supported_suffixes())
    # the smaller of kbqa's limit and Streamlit's own (whose English note the CSS hides)
    limit = min(svc.settings.kb.max_file_mb, int(st.get_option("server.maxUploadSize")))
    st.subheader(t("kb.upload_header", kb=kb))
    files = st.file_uploader(t("kb.uploader", types=" ".join(suffixes), mb=limit),
                             type=suffixes, accept_multiple_files=True, key=f"kb_upload_{kb}")
    if st.button(t("kb.ingest"), key="kb_ingest", disabled=not files, type="primary"):
        outcomes = _ingest_with_bars(svc, kb, [(f.name, f.getvalue()) for f in files])
        st.session_state[RESULTS_KEY] = {"kb": kb, "rows": [
            {"file": o.name, "stored as": o.stored_name or "–",
             "status": o.status, "chunks": o.chunks,
             "reason": o.error or ""} for o in outcomes]}
    with st.expander(t("kb.path_section")):
        path = st.text_input(t("kb.path"), key="kb_path")
        if st.button(t("kb.ingest_path"), key="kb_ingest_path") and path.strip():
            with st.spinner(t("kb.ingesting")):
                try:
                    results = svc.ingest([Path(path.strip()).expanduser()], kb)
                    st.session_state[RESULTS_KEY] = {"kb": kb, "rows": [
                        {"file": Path(r.path).name, "stored as": "–",
                         "status": r.status, "chunks": r.chunks,
                         "reason": r.error or ""} for r in results]}
                except KbqaError as exc:
                    st.error(str(exc))
    _show_results(kb)


def _documents(svc: KbqaService, kb: str) -> None:
    st.subheader(t("kb.documents"))
    try:
        docs = svc.knowledge_base(kb).documents()
    except KbqaError as exc:
        st.error(str(exc))
        return
    if not docs:
        st.caption(t("kb.no_documents"))
    else:
        st.caption(t("kb.document_count", docs=len(docs), chunks=sum(d.chunks for d in docs)))
        st.table([{t("kb.col.file"): d.filename, t("kb.col.chunks"): d.chunks,
                   t("kb.col.updated"): d.updated_at} for d in docs])
        by_source = {d.source: d for d in docs}
        names = [d.filename for d in docs]
        cols = st.columns([3, 1])
        chosen = cols[0].selectbox(
            t("kb.remove_pick"), list(by_source), key="kb_remove_doc",
            format_func=lambda source: by_source[source].filename + (
                f" ({Path(source).parent.name})" if names.count(by_source[source].filename) > 1
                else ""))
        if cols[1].button(t("kb.remove"), key="kb_remove"):
            st.session_state[REMOVE_PENDING_KEY] = (kb, chosen)
        pending = st.session_state.get(REMOVE_PENDING_KEY)
        if pending and pending[0] == kb and pending[1] in by_source:
            doc = by_source[pending[1]]
            st.warning(t("kb.remove_confirm", kb=kb, file=doc.filename, chunks=doc.chunks))
            yes, no = st.columns(2)
            if yes.button(t("kb.remove_yes"), key="kb_remove_yes", type="primary"):
                try:
                    count = svc.remove_document(kb, doc.source)
                except KbqaError as exc:
                    st.error(str(exc))
                else:
                    _forget_results()
                    flash("success", t("kb.removed", file=doc.filename, chunks=count))
                    st.rerun()
            if no.button(t("common.cancel"), key="kb_remove_no"):
                st.session_state.pop(REMOVE_PENDING_KEY, None)
                st.rerun()
    if st.button(t("kb.reindex"), key="kb_reindex", disabled=not docs):
        with st.spinner(t("kb.reindexing")):
            try:
                svc.knowledge_base(kb).rebuild_index()
                st.success(t("kb.reindexed"))
            except KbqaError as exc:
                st.error(str(exc))


CHUNKS_PER_PAGE = 10


def _chunk_viewer(svc: KbqaService, kb: str) -> None:
    """One document's chunks in order, as the index holds them (what retrieval can find), a page
    at a time; its original file to download."""
    try:
        docs = svc.knowledge_base(kb).documents()
    except KbqaError:
        return  # _documents has said why
    if not docs:
        return
    st.subheader(t("kb.chunks_header"))
    by_source = {d.source: d for d in docs}
    chosen = st.selectbox(t("kb.chunks_pick"), list(by_source), key=f"kb_chunks_doc_{kb}",
                          format_func=lambda source: by_source[source].filename)
    doc = by_source[chosen]
    chunks = svc.knowledge_base(kb).document_chunks(doc.source)
    original_file(doc.source, doc.filename, None, key=f"kb_chunks_{kb}")
    pages = max(1, -(-len(chunks) // CHUNKS_PER_PAGE))
    page = 1
    if pages > 1:
        page = int(st.number_input(t("kb.chunks_page", pages=pages), min_value=1,
                                   max_value=pages, step=1, key=f"kb_chunks_page_{kb}_{chosen}"))
    first = (page - 1) * CHUNKS_PER_PAGE
    st.caption(t("kb.chunks_range", file=doc.filename, count=len(chunks), first=first + 1,
                 last=min(first + CHUNKS_PER_PAGE, len(chunks))))
    for number, chunk in enumerate(chunks[first:first + CHUNKS_PER_PAGE], start=first + 1):
        meta = chunk.metadata
        where = [t("kb.chunk_title", number=number)]
        if meta.get("page"):
            where.append(t("kb.chunk_page", page=meta["page"]))
        if meta.get("heading"):
            where.append(escape_markdown(str(meta["heading"])))
        with st.container(border=True):
            st.markdown(f"**{' · '.join(where)}**")
            st.code(chunk.page_content, language=None, wrap_lines=True)


def render() -> None:
    svc = service()
    st.header(t("kb.header"))
    _manage(svc)
    kb = current_kb(svc)
    if kb is None:
        return
    _upload(svc, kb)
    _documents(svc, kb)
    _chunk_viewer(svc, kb)
