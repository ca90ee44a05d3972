"""Chat: ask a knowledge base; the answer streams in with its sources; per-session history."""

from __future__ import annotations

from typing import Any

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.ui.common import (default_variant_label, kb_picker, render_refusal, render_sources,
                            service, variant_options)

HISTORY_KEY = "chat_history"
MAX_SHOWN_TURNS = 50  # the page keeps this many; the prompt gets settings.answer.history_turns of them


def _show_turn(turn: dict[str, Any]) -> None:
    st.chat_message("user").write(turn["question"])
    with st.chat_message("assistant"):
        if turn.get("error"):
            st.error(turn["error"])
            return
        st.write(turn["answer"])
        if turn["refused"]:
            render_refusal()
        render_sources(turn["sources"])
        _timing_caption(turn)


def _timing_caption(turn: dict[str, Any]) -> None:
    t = turn.get("timings") or {}
    if "total" in t:
        first = f"first token {t['first_token']:.2f} s · " if "first_token" in t else ""
        st.caption(f"{turn['variant']} · {first}total {t['total']:.2f} s")


def render() -> None:
    svc = service()
    st.header("问答 / Chat")
    history: list[dict[str, Any]] = st.session_state.setdefault(HISTORY_KEY, [])
    left, right = st.columns(2)
    with left:
        kb = kb_picker(svc, key="chat_kb")
    options = variant_options(svc)
    with right:
        label = st.selectbox("模型 / model variant", list(options),
                             index=default_variant_label(svc, options), key="chat_variant")
    turns = svc.settings.answer.history_turns
    cols = st.columns([3, 1])
    cols[0].caption(f"最近 {turns} 轮对话会作为上下文 / the last {turns} turns go into the prompt")
    if cols[1].button("清空对话 / clear", key="chat_clear", disabled=not history):
        history.clear()
    for turn in history:
        _show_turn(turn)
    if kb is None:
        return
    question = st.chat_input("输入问题，例如：入职满一年的员工每年享有几天带薪年假？")
    if not question:
        return
    previous = [(t["question"], t["answer"]) for t in history
                if t["kb"] == kb and not t.get("error")]
    turn: dict[str, Any] = {"question": question, "kb": kb, "variant": label, "answer": "",
                            "sources": [], "refused": False, "timings": {}}
    st.chat_message("user").write(question)
    with st.chat_message("assistant"):
        try:
            events = svc.stream_variant(question, options[label], kb, history=previous)
            done: dict[str, Any] = {}

            def tokens():
                for kind, value in events:
                    if kind == "sources":
                        turn["sources"] = value
                    elif kind == "token":
                        yield value
                    elif kind == "done":
                        done["answer"] = value

            with st.spinner("检索与生成中… / retrieving and generating…"):
                st.write_stream(tokens())
            answer = done["answer"]
            turn.update(answer=answer.text, refused=answer.refused, sources=answer.sources,
                        timings=answer.timings)
            if answer.refused:
                render_refusal()
            render_sources(answer.sources)
            _timing_caption(turn)
        except KbqaError as exc:
            turn["error"] = str(exc)
            st.error(str(exc))
    history.append(turn)
    del history[:-MAX_SHOWN_TURNS]
