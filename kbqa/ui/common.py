"""What every page shares: the one service per process, and how a source is shown."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kbqa.qa.answers import Source
from kbqa.config import load_settings
from kbqa.service import KbqaService
from kbqa.adapters.variants import Variant

# adapters/ next to streamlit_app.py (the repository's own adapters) is offered as well
REPO_ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"


@st.cache_resource(show_spinner=False)
def _service(home: str) -> KbqaService:
    """One service per data directory and process: models load once and are shared by sessions."""
    return KbqaService(load_settings({"home": home}))


def service() -> KbqaService:
    return _service(str(load_settings().home))


def variant_options(svc: KbqaService) -> dict[str, Variant]:
    """Label → Variant: plain, each adapter alone, and the configured stack if it has several."""
    options = {"plain（无适配器 / no adapter）": Variant()}
    configured = svc.default_variant()
    if len(configured.adapters) > 1:
        options[f"{configured.label}（configured）"] = configured
    for folder in svc.adapter_choices([REPO_ADAPTERS]):
        variant = Variant.of([folder])
        options.setdefault(f"adapter: {variant.label}", variant)
    return options


def default_variant_label(svc: KbqaService, options: dict[str, Variant]) -> int:
    configured = svc.default_variant()
    for index, variant in enumerate(options.values()):
        if variant == configured:
            return index
    return 0


def kb_picker(svc: KbqaService, key: str, label: str = "知识库 / knowledge base") -> str | None:
    names = svc.list_knowledge_bases()
    if not names:
        st.info("还没有知识库。请在“知识库”页面创建并上传文件。 "
                "No knowledge base yet: create one on the Knowledge bases page.")
        return None
    default = names.index(svc.settings.kb.name) if svc.settings.kb.name in names else 0
    return st.selectbox(label, names, index=default, key=key)


def render_sources(sources: list[Source]) -> None:
    if not sources:
        st.caption("没有检索到相关段落 / no passage retrieved")
        return
    st.caption(f"来源 / sources ({len(sources)})")
    for number, source in enumerate(sources, start=1):
        score = "" if source.score is None else f" · score {source.score:.3f}"
        with st.expander(f"[{number}] {source.location()}{score}"):
            st.write(source.snippet)
            st.caption(source.source)


def render_refusal() -> None:
    st.warning("知识库中没有找到答案 / Not in the knowledge base", icon=":material/search_off:")
