"""Settings: edit, validate and persist config.toml (invalid values are refused, nothing written;
each problem is shown under its field, in the user's language)."""

from __future__ import annotations

from typing import Any, get_args

import streamlit as st

from kbqa.config import LLMSettings, Settings
from kbqa.errors import ConfigError, SettingProblem
from kbqa.qa.prompts import DEFAULT_TEMPLATE
from kbqa.ui.common import REPO_ADAPTERS, service
from kbqa.ui.i18n import language, t

# pydantic's bound errors: the message key and the context entry holding the bound
_BOUNDS = {"greater_than_equal": ("error.ge", "ge"), "greater_than": ("error.gt", "gt"),
           "less_than_equal": ("error.le", "le"), "less_than": ("error.lt", "lt")}
_NOT_A_NUMBER = {"int_parsing", "float_parsing", "int_type", "float_type", "int_from_float"}


def problem_text(problem: SettingProblem) -> str:
    """A setting's problem in the user's language (the English message for rarer ones)."""
    context = problem.context
    if problem.kind in _BOUNDS:
        key, bound = _BOUNDS[problem.kind]
        limit = context[bound]
        return t(key, limit=format(limit, "g") if isinstance(limit, float) else limit)
    if problem.kind == "literal_error":
        return t("error.choice", expected=context.get("expected", ""))
    if problem.kind in _NOT_A_NUMBER:
        return t("error.number")
    if problem.kind == "missing_path":
        return t("error.missing_path", path=context.get("path", ""))
    if problem.kind == "not_adapter":
        return t("error.not_adapter", path=context.get("path", ""))
    if problem.kind == "template":
        return t("error.template")
    return t("error.other", message=problem.message)


def _optional_float(label: str, value: float | None, default: float, key: str,
                    help: str | None = None) -> float | None:
    on = st.checkbox(t("settings.enabled", label=label), value=value is not None, key=f"{key}_on",
                     help=help)
    number = st.number_input(label, value=float(default if value is None else value),
                             step=0.05, format="%.3f", key=key)
    return float(number) if on else None


def _shown(settings: Settings, name: str) -> object:
    """What the form showed for a setting, so only fields the user edited are saved."""
    value = settings.value(name)
    return [str(p) for p in value] if name == "adapters" else value


def render() -> None:
    svc = service()
    s = svc.settings
    st.header(t("settings.header"))
    st.caption(t("settings.caption", path=s.config_path))
    found = [str(p) for p in svc.adapter_choices([REPO_ADAPTERS])]
    slots: dict[str, Any] = {}  # short name → the place under its field for its problem

    def problem_slot(name: str) -> None:
        slots[name] = st.empty()

    with st.form("settings"):
        st.subheader(t("settings.model"))
        llm = st.text_input(t("settings.llm"), s.llm.model, key="set_llm")
        problem_slot("llm")
        dtypes = list(get_args(LLMSettings.model_fields["dtype"].annotation))
        dtype = st.selectbox(t("settings.dtype"), dtypes, index=dtypes.index(s.llm.dtype),
                             key="set_dtype")
        problem_slot("llm_dtype")
        adapters = st.text_area(t("settings.adapters"), "\n".join(str(a) for a in s.llm.adapters),
                                key="set_adapters",
                                help=t("settings.adapters_help",
                                       found=", ".join(found) or t("settings.none")))
        problem_slot("adapters")
        st.subheader(t("settings.retrieval"))
        top_k = st.number_input(t("settings.top_k"), value=s.retrieval.top_k, step=1,
                                key="set_top_k")
        problem_slot("top_k")
        modes = ["bm25", "dense", "hybrid"]
        mode = st.selectbox(t("settings.mode"), modes, index=modes.index(s.retrieval.mode),
                            key="set_mode")
        problem_slot("retrieval_mode")
        coverage = _optional_float(t("settings.min_coverage"), s.retrieval.min_coverage, 0.35,
                                   "set_min_coverage", help=t("settings.min_coverage_help"))
        problem_slot("min_coverage")
        threshold = _optional_float(t("settings.score_threshold"), s.retrieval.score_threshold,
                                    0.3, "set_score_threshold",
                                    help=t("settings.score_threshold_help"))
        problem_slot("score_threshold")
        follow_up = st.number_input(t("settings.history_questions"),
                                    value=s.retrieval.history_questions, step=1,
                                    key="set_history_questions",
                                    help=t("settings.history_questions_help"))
        problem_slot("history_questions")
        st.subheader(t("settings.generation"))
        max_new = st.number_input(t("settings.max_new_tokens"), value=s.llm.max_new_tokens,
                                  step=16, key="set_max_new_tokens")
        problem_slot("max_new_tokens")
        temperature = st.number_input(t("settings.temperature"), value=float(s.llm.temperature),
                                      step=0.1, key="set_temperature")
        problem_slot("temperature")
        top_p = st.number_input(t("settings.top_p"), value=float(s.llm.top_p), step=0.05,
                                key="set_top_p")
        problem_slot("top_p")
        repetition = st.number_input(t("settings.repetition_penalty"),
                                     value=float(s.llm.repetition_penalty), step=0.05,
                                     key="set_repetition_penalty")
        problem_slot("repetition_penalty")
        refusal_bias = st.number_input(t("settings.refusal_bias"), value=float(s.llm.refusal_bias),
                                       step=0.5, key="set_refusal_bias",
                                       help=t("settings.refusal_bias_help"))
        problem_slot("refusal_bias")
        min_answerability = st.number_input(
            t("settings.min_answerability"), value=float(s.llm.min_answerability), min_value=0.0,
            max_value=1.0, step=0.05, key="set_min_answerability",
            help=t("settings.min_answerability_help"))
        problem_slot("min_answerability")
        turns = st.number_input(t("settings.history_turns"), value=s.answer.history_turns, step=1,
                                key="set_history_turns")
        problem_slot("history_turns")
        policies = ["span", "refuse", "off"]
        lang = language()
        grounding = st.selectbox(t("settings.grounding"), policies,
                                 index=policies.index(s.answer.grounding),
                                 format_func=lambda p: t(f"settings.grounding_{p}", lang),
                                 key="set_grounding")
        problem_slot("grounding")
        max_mb = st.number_input(t("settings.max_file_mb"), value=s.kb.max_file_mb, step=10,
                                 key="set_max_file_mb")
        problem_slot("max_file_mb")
        template = st.text_area(t("settings.template"), s.answer.prompt_template or "",
                                height=160, key="set_template", placeholder=DEFAULT_TEMPLATE)
        problem_slot("prompt_template")
        submitted = st.form_submit_button(t("settings.save"), type="primary")
    if not submitted:
        return
    changes: dict[str, Any] = {
        "llm": llm.strip(), "llm_dtype": dtype,
        "adapters": [line.strip() for line in adapters.splitlines() if line.strip()],
        "top_k": int(top_k), "retrieval_mode": mode, "min_coverage": coverage,
        "score_threshold": threshold, "max_new_tokens": int(max_new),
        "temperature": float(temperature), "top_p": float(top_p),
        "repetition_penalty": float(repetition), "refusal_bias": float(refusal_bias),
        "min_answerability": float(min_answerability),
        "history_turns": int(turns),
        "history_questions": int(follow_up), "grounding": grounding,
        "max_file_mb": int(max_mb), "prompt_template": template if template.strip() else None,
    }
    try:
        svc.update_settings({k: v for k, v in changes.items() if v != _shown(s, k)})
    except ConfigError as exc:
        # the form keeps every value typed; each problem goes under its field
        st.error(t("settings.invalid"))
        by_field: dict[str, list[str]] = {}
        for problem in exc.problems:
            if problem.name in slots:
                by_field.setdefault(problem.name, []).append(problem_text(problem))
            else:
                st.error(problem_text(problem))
        for name, texts in by_field.items():
            slots[name].error("\n\n".join(texts))
        if not exc.problems:
            st.error(str(exc))
        return
    st.success(t("settings.saved", path=s.config_path))
