"""Compare: one question, the same retrieved passages, plain and adapter answers side by side."""

from __future__ import annotations

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.qa.answers import VariantAnswer
from kbqa.ui.common import (
    PLAIN_LABEL,
    current_kb,
    explain_unfit_adapters,
    render_refusal,
    render_sources,
    service,
    variant_options,
)

RESULT_KEY = "compare_result"


def _column(answer: VariantAnswer) -> None:
    st.markdown(f"**{answer.variant.label}**")
    if answer.error:
        st.error("这个变体没有生成回答（详情见下） / this variant could not answer")
        with st.expander("详情 / details"):
            st.code(answer.error)
        return
    st.write(answer.text or "…")
    if answer.refused:
        render_refusal()
    t = answer.timings
    if "total" in t:
        first = f"first token {t['first_token']:.2f} s · " if "first_token" in t else ""
        st.caption(f"{first}total {t['total']:.2f} s")
    check = answer.applied
    if answer.variant.is_plain:
        st.caption("plain model (adapters disabled, same weights)")
    elif check is not None and check.applied:
        st.success(f"adapter applied · max |Δlogit| {check.max_logit_diff:.3g} on a probe, "
                   f"{check.modules} modules", icon=":material/check_circle:")
    elif check is not None:
        st.error("adapter NOT applied: " + "; ".join(check.reasons), icon=":material/error:")


def render() -> None:
    svc = service()
    st.header("对比 / Compare")
    st.caption("同一问题、同一检索结果，比较无适配器与有适配器的回答。 The same question and the same "
               "retrieved passages; the base model is loaded once and the plain answer comes from "
               "it with the adapters disabled.")
    kb = current_kb(svc)
    options = variant_options(svc)
    adapters = [label for label, v in options.items() if not v.is_plain]
    if not adapters:
        st.info("没有可用的适配器 / no adapters found (configure them in Settings or put peft "
                "folders in adapters/)")
    explain_unfit_adapters(svc)
    configured = [label for label in adapters if options[label] == svc.default_variant()]
    chosen = st.multiselect("适配器 / adapter variants", adapters,
                            default=configured or adapters[:1], key="compare_variants",
                            max_selections=3)
    question = st.text_input("问题 / question", key="compare_question")
    if kb is None:
        return
    if st.button("对比 / compare", key="compare_go", type="primary") and question.strip():
        variants = [options[label] for label in [PLAIN_LABEL, *chosen]]
        cols = st.columns(len(variants))
        slots = [col.empty() for col in cols]
        for slot, variant in zip(slots, variants):
            slot.info(f"{variant.label}: waiting…")
        sources, answers = [], []
        try:
            with st.spinner("生成中 / generating…"):
                for kind, value in svc.compare(question, variants, kb):
                    if kind == "sources":
                        sources = value
                    else:
                        with slots[len(answers)].container():
                            _column(value)
                        answers.append(value)
        except KbqaError as exc:
            st.error(str(exc))
            return
        st.session_state[RESULT_KEY] = {"question": question, "sources": sources,
                                        "answers": answers}
        st.subheader("共享的检索上下文 / shared context")
        render_sources(sources)
        return
    result = st.session_state.get(RESULT_KEY)
    if result:
        st.caption(f"上次 / last: {result['question']}")
        for col, answer in zip(st.columns(len(result["answers"])), result["answers"]):
            with col:
                _column(answer)
        st.subheader("共享的检索上下文 / shared context")
        render_sources(result["sources"])
