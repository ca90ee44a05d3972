"""Chat: ask the sidebar's knowledge base; answers stream in with their sources. Conversations are
saved (kbqa.conversations) and listed in the sidebar, per knowledge base."""

from __future__ import annotations

import threading
import time

import streamlit as st

from kbqa.conversations import Conversation, ConversationStore, Turn
from kbqa.errors import KbqaError
from kbqa.service import KbqaService
from kbqa.ui.common import (
    copy_button,
    current_kb,
    default_variant_label,
    explain_unfit_adapters,
    flash,
    kb_sources,
    render_refusal,
    render_sources,
    service,
    show_error,
    timing_text,
    variant_formatter,
    variant_options,
    variant_text,
)
from kbqa.ui.i18n import t

# set while this session's answer streams. A click (stop, a new question) starts the next run
# on a new thread at once while the old run is still stopping; the next run waits for the old
# one to save what it wrote before reading the conversation.
ANSWERING_KEY = "chat_answering"
SAVE_WAIT_S = 30.0


def _conversation_key(kb: str) -> str:
    return f"chat_conversation_{kb}"


def _pending_key(kb: str) -> str:
    return f"chat_conversation_pending_{kb}"


def _sidebar(store: ConversationStore, kb: str) -> Conversation | None:
    """The knowledge base's saved conversations, newest first, one button each; new, rename and
    delete. The one shown is kept in session state (None: a new, still empty conversation)."""
    key = _conversation_key(kb)
    conversations = {c.id: c for c in store.list(kb)}
    if _pending_key(kb) in st.session_state:
        st.session_state[key] = st.session_state.pop(_pending_key(kb))
    chosen = st.session_state.get(key, "unset")
    if chosen is not None and chosen not in conversations:
        chosen = st.session_state[key] = next(iter(conversations), None)
    st.subheader(t("chat.conversations"))
    if st.button(t("chat.new"), key="chat_new", width="stretch",
                 icon=":material/add:"):
        chosen = st.session_state[key] = None
    if not conversations:
        st.caption(t("chat.no_saved"))
    for conversation in conversations.values():
        if st.button(conversation.title, key=f"chat_open_{conversation.id}", width="stretch",
                     type="primary" if conversation.id == chosen else "secondary"):
            st.session_state[key] = conversation.id
            st.rerun()
    if chosen is None:
        return None
    conversation = conversations[chosen]
    with st.expander(t("chat.manage")):
        title = st.text_input(t("chat.title"), value=conversation.title,
                              key=f"chat_title_{conversation.id}")
        cols = st.columns(2)
        if cols[0].button(t("chat.rename"), key="chat_rename") and title.strip():
            store.rename(conversation.id, title)
            st.rerun()
        if cols[1].button(t("chat.delete"), key="chat_delete"):
            store.delete(conversation.id)
            st.session_state[_pending_key(kb)] = None
            flash("success", t("chat.deleted", title=conversation.title))
            st.rerun()
    return conversation


def _timing_caption(turn: Turn) -> None:
    timings = turn.timings
    if "total" not in timings:
        return
    answerability = ("" if turn.answerability is None
                     else " · " + t("answer.answerability", p=turn.answerability))
    st.caption(f"{variant_text(turn.variant)} · {timing_text(timings)}{answerability}")


def _rate(store: ConversationStore, turn_id: int) -> None:
    value = st.session_state.get(f"chat_rating_{turn_id}")
    if value is not None:
        store.rate(turn_id, 1 if value == 1 else -1)


def _show_turn(store: ConversationStore, turn: Turn, documents: set[str]) -> None:
    st.chat_message("user").write(turn.question)
    with st.chat_message("assistant"):
        if turn.error:
            st.error(turn.error)
            return
        st.write(turn.answer + (f"\n\n{t('chat.stopped')}" if turn.state == "stopped" else ""))
        if turn.refused:
            render_refusal()
        render_sources(turn.sources, turn.answer, documents=documents, key=f"turn{turn.id}")
        _timing_caption(turn)
        if turn.answer:
            copy_button(turn.answer, key=f"chat_copy_{turn.id}")
        if turn.state == "done":
            key = f"chat_rating_{turn.id}"
            if key not in st.session_state and turn.rating is not None:
                st.session_state[key] = 1 if turn.rating == 1 else 0
            st.feedback("thumbs", key=key, on_change=_rate, args=(store, turn.id))


def _answer(svc: KbqaService, turn: Turn, variant_label: str, kb: str,
            previous: list[tuple[str, str]], started: float) -> None:
    """Stream one answer into the page, saving it whatever happens: finished, failed, or cut
    short by the stop button or a new question (Streamlit then stops this run with an
    exception, which the `finally` below sees)."""
    store = svc.conversations
    variant = variant_options(svc)[variant_label]
    saved = st.session_state[ANSWERING_KEY] = threading.Event()
    events = None
    try:
        if not svc.models_ready(variant):
            with st.status(t("chat.loading"), expanded=False) as status:
                load_start = time.perf_counter()
                svc.load_models(variant)
                turn.timings["load"] = time.perf_counter() - load_start
                status.update(label=t("chat.loaded", seconds=turn.timings["load"]),
                              state="complete")
        st.button(t("chat.stop"), key="chat_stop", icon=":material/stop_circle:")  # any click ends this run (see above)
        slot = st.empty()
        slot.caption(t("chat.working"))
        events = svc.stream_variant(turn.question, variant, kb, history=previous)
        for kind, value in events:
            if kind == "sources":
                turn.sources = value
            elif kind == "token":
                if not turn.answer:
                    turn.timings["first_token"] = time.perf_counter() - started
                turn.answer += value
                slot.markdown(turn.answer + "▌")
            elif kind == "done":
                turn.answer, turn.refused = value.text, value.refused
                turn.sources = value.sources
                turn.timings = {**value.timings, **turn.timings}
                turn.answerability = value.answerability
        turn.state = "done"
    except KbqaError as exc:
        turn.state, turn.error = "error", str(exc)
        show_error(exc)
    finally:
        if turn.state == "pending":
            turn.state = "stopped"
        turn.timings["total"] = time.perf_counter() - started
        try:  # saved first: the next run shows this turn as soon as it is saved
            store.save_turn(turn)
        finally:
            saved.set()
            if events is not None:
                events.close()  # releases the shared model and stops its generation


def render() -> None:
    started = time.perf_counter()  # a question's wait counts from here, the run's start
    svc = service()
    store = svc.conversations
    answering = st.session_state.get(ANSWERING_KEY)
    if answering is not None:
        answering.wait(SAVE_WAIT_S)
    st.header(t("chat.header"))
    kb = current_kb(svc)
    conversation = None
    if kb is not None:
        with st.sidebar:
            conversation = _sidebar(store, kb)
    options = variant_options(svc)
    label = st.selectbox(t("chat.variant"), list(options), format_func=variant_formatter(),
                         index=default_variant_label(svc, options), key="chat_variant")
    explain_unfit_adapters(svc)
    if kb is None:
        return
    try:
        if not svc.knowledge_base(kb).documents():
            st.info(t("chat.empty_kb", kb=kb))
    except KbqaError as exc:
        st.error(str(exc))
    turns = store.turns(conversation.id) if conversation else []
    history_turns = svc.settings.answer.history_turns
    cols = st.columns([3, 1])
    cols[0].caption(t("chat.history", turns=history_turns))
    if cols[1].button(t("chat.clear"), key="chat_clear", disabled=not turns):
        store.clear(conversation.id)  # type: ignore[union-attr]  # turns imply a conversation
        st.rerun()
    documents = kb_sources(svc, kb) if turns else set()
    for turn in turns:
        _show_turn(store, turn, documents)
    question = st.chat_input(t("chat.input"))
    if not question:
        return
    if conversation is None:
        conversation = store.create(kb)
    previous = [(t.question, t.answer) for t in turns if t.state == "done"]
    st.session_state[_pending_key(kb)] = conversation.id
    turn = store.add_turn(conversation.id, question, label)
    st.chat_message("user").write(question)
    with st.chat_message("assistant"):
        _answer(svc, turn, label, kb, previous, started)
    st.rerun()  # shows the saved turn with its rating buttons, and enables "clear"
