"""Settings: edit, validate and persist config.toml (invalid values are refused, nothing written)."""

from __future__ import annotations

from typing import Any, get_args

import streamlit as st

from kbqa.config import LLMSettings, Settings
from kbqa.errors import ConfigError
from kbqa.qa.prompts import DEFAULT_TEMPLATE
from kbqa.ui.common import REPO_ADAPTERS, service


def _optional_float(label: str, value: float | None, default: float, key: str,
                    help: str | None = None) -> float | None:
    on = st.checkbox(f"{label}: on", value=value is not None, key=f"{key}_on", help=help)
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
    st.header("设置 / Settings")
    st.caption(f"保存到 / saved to `{s.config_path}`; KBQA_* environment variables still win at "
               "the next start.")
    found = [str(p) for p in svc.adapter_choices([REPO_ADAPTERS])]
    with st.form("settings"):
        st.subheader("模型 / model")
        llm = st.text_input("LLM ('embedded', 'embedded:NAME' or a model folder)", s.llm.model,
                            key="set_llm")
        dtypes = list(get_args(LLMSettings.model_fields["dtype"].annotation))
        dtype = st.selectbox("dtype", dtypes, index=dtypes.index(s.llm.dtype), key="set_dtype")
        adapters = st.text_area("LoRA adapters (one folder per line, stacked in order)",
                                "\n".join(str(a) for a in s.llm.adapters), key="set_adapters",
                                help="found: " + (", ".join(found) or "none"))
        st.subheader("检索 / retrieval")
        top_k = st.number_input("top-k", value=s.retrieval.top_k, step=1, key="set_top_k")
        modes = ["bm25", "dense", "hybrid"]
        mode = st.selectbox("mode", modes, index=modes.index(s.retrieval.mode), key="set_mode")
        coverage = _optional_float("min_coverage", s.retrieval.min_coverage, 0.35, "set_min_coverage",
                                   help="share of the question's terms a passage must hold")
        threshold = _optional_float("score_threshold", s.retrieval.score_threshold, 0.3,
                                    "set_score_threshold", help="dense cosine cut-off")
        st.subheader("生成 / generation")
        max_new = st.number_input("max_new_tokens", value=s.llm.max_new_tokens, step=16,
                                  key="set_max_new_tokens")
        temperature = st.number_input("temperature", value=float(s.llm.temperature), step=0.1,
                                      key="set_temperature")
        top_p = st.number_input("top_p", value=float(s.llm.top_p), step=0.05, key="set_top_p")
        repetition = st.number_input("repetition_penalty", value=float(s.llm.repetition_penalty),
                                     step=0.05, key="set_repetition_penalty")
        turns = st.number_input("history_turns", value=s.answer.history_turns, step=1,
                                key="set_history_turns")
        max_mb = st.number_input("max_file_mb", value=s.kb.max_file_mb, step=10, key="set_max_file_mb")
        template = st.text_area("prompt template (empty = built-in; must use {context} and "
                                "{question}, may use {history})", s.answer.prompt_template or "",
                                height=160, key="set_template", placeholder=DEFAULT_TEMPLATE)
        submitted = st.form_submit_button("保存 / save", type="primary")
    if not submitted:
        return
    changes: dict[str, Any] = {
        "llm": llm.strip(), "llm_dtype": dtype,
        "adapters": [line.strip() for line in adapters.splitlines() if line.strip()],
        "top_k": int(top_k), "retrieval_mode": mode, "min_coverage": coverage,
        "score_threshold": threshold, "max_new_tokens": int(max_new),
        "temperature": float(temperature), "top_p": float(top_p),
        "repetition_penalty": float(repetition), "history_turns": int(turns),
        "max_file_mb": int(max_mb), "prompt_template": template if template.strip() else None,
    }
    try:
        svc.update_settings({k: v for k, v in changes.items() if v != _shown(s, k)})
    except ConfigError as exc:
        st.error(str(exc))
        return
    st.success(f"已保存 / saved to {s.config_path}")
