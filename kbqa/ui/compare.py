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
    timing_text,
    variant_formatter,
    variant_options,
)
from kbqa.ui.i18n import t

RESULT_KEY = "compare_result"


def _column(answer: VariantAnswer) -> None:
    st.markdown(f"**{answer.variant.label}**")
    if answer.error:
        st.error(t("compare.failed"))
        with st.expander(t("common.details")):
            st.code(answer.error)
        return
    st.write(answer.text or "…")
    if answer.refused:
        render_refusal()
    if "total" in answer.timings:
        st.caption(timing_text(answer.timings))
    check = answer.applied
    if answer.variant.is_plain:
        st.caption(t("compare.plain_note"))
    elif check is not None and check.applied:
        st.success(t("compare.applied", diff=check.max_logit_diff, modules=check.modules),
                   icon=":material/check_circle:")
    elif check is not None:
        st.error(t("compare.not_applied", reasons="; ".join(check.reasons)),
                 icon=":material/error:")


def render() -> None:
    svc = service()
    st.header(t("compare.header"))
    st.caption(t("compare.caption"))
    kb = current_kb(svc)
    options = variant_options(svc)
    adapters = [label for label, v in options.items() if not v.is_plain]
    if not adapters:
        st.info(t("compare.no_adapters"))
    explain_unfit_adapters(svc)
    configured = [label for label in adapters if options[label] == svc.default_variant()]
    chosen = st.multiselect(t("compare.variants"), adapters, format_func=variant_formatter(),
                            default=configured or adapters[:1], key="compare_variants",
                            max_selections=3, placeholder=t("common.choose"))
    question = st.text_input(t("compare.question"), key="compare_question")
    if kb is None:
        return
    if st.button(t("compare.go"), key="compare_go", type="primary") and question.strip():
        variants = [options[label] for label in [PLAIN_LABEL, *chosen]]
        cols = st.columns(len(variants))
        slots = [col.empty() for col in cols]
        for slot, variant in zip(slots, variants):
            slot.info(t("compare.waiting", label=variant.label))
        sources, answers = [], []
        try:
            with st.spinner(t("compare.generating")):
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
        st.subheader(t("compare.context"))
        render_sources(sources)
        return
    result = st.session_state.get(RESULT_KEY)
    if result:
        st.caption(t("compare.last", question=result["question"]))
        for col, answer in zip(st.columns(len(result["answers"])), result["answers"]):
            with col:
                _column(answer)
        st.subheader(t("compare.context"))
        render_sources(result["sources"])
