"""Compare: one question, the same retrieved passages, plain and adapter answers side by side."""

from __future__ import annotations

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.qa.answers import Source, VariantAnswer
from kbqa.service import KbqaService
from kbqa.ui.common import (
    PLAIN_LABEL,
    copy_button,
    current_kb,
    explain_unfit_adapters,
    kb_sources,
    render_refusal,
    render_sources,
    service,
    timing_text,
    variant_formatter,
    variant_options,
)
from kbqa.ui.i18n import t

RESULT_KEY = "compare_result"


def _column(answer: VariantAnswer, index: int) -> None:
    st.markdown(f"**{answer.variant.label}**")
    if answer.error:
        st.error(t("compare.failed"))
        with st.expander(t("common.details")):
            st.code(answer.error)
        return
    st.write(answer.text or "…")
    if answer.text:
        copy_button(answer.text, key=f"compare_copy_{index}")
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


def _shared_context(svc: KbqaService, kb: str, sources: list[Source],
                    answers: list[VariantAnswer]) -> None:
    """The passages every variant read, with one chosen answer's span marked in them (the first
    adapter's by default: the answer being tried out)."""
    st.subheader(t("compare.context"))
    labels = [a.variant.label for a in answers]
    marked = st.radio(t("compare.mark"), range(len(answers)), format_func=labels.__getitem__,
                      index=1 if len(answers) > 1 else 0, horizontal=True, key="compare_mark")
    render_sources(sources, answers[marked].text if answers else "",
                   documents=kb_sources(svc, kb), key="compare_sources")


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
        st.session_state.pop("compare_mark", None)  # the last result's choice: maybe no longer one
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
                            _column(value, len(answers))
                        answers.append(value)
        except KbqaError as exc:
            st.error(str(exc))
            return
        st.session_state[RESULT_KEY] = {"question": question, "sources": sources,
                                        "answers": answers}
        _shared_context(svc, kb, sources, answers)
        return
    result = st.session_state.get(RESULT_KEY)
    if result:
        st.caption(t("compare.last", question=result["question"]))
        for index, (col, answer) in enumerate(zip(st.columns(len(result["answers"])),
                                                  result["answers"])):
            with col:
                _column(answer, index)
        _shared_context(svc, kb, result["sources"], result["answers"])
