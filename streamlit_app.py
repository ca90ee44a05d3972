"""kbqa web front end: `pip install -e ".[app]"` then `streamlit run streamlit_app.py`.

Thin on purpose: it picks a page and the knowledge base in use; the pages (kbqa/ui/) render what
kbqa's service layer returns.
A page can be opened directly with ?page=chat|knowledge|compare|evaluation|settings, in English
with &lang=en (Chinese is the default; the sidebar's switch changes it).
"""

from __future__ import annotations

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.ui import chat, compare, evaluation, knowledge, settings
from kbqa.ui.common import kb_switcher, service, show_flashes
from kbqa.ui.i18n import language_switch, streamlit_texts_css, t

PAGES = {"chat": chat.render, "knowledge": knowledge.render, "compare": compare.render,
         "evaluation": evaluation.render, "settings": settings.render}

st.set_page_config(page_title="kbqa", page_icon="📚", layout="wide")
if "page" not in st.session_state:
    wanted = st.query_params.get("page", "chat")
    st.session_state["page"] = wanted if wanted in PAGES else "chat"
try:
    with st.sidebar:
        st.title(t("app.title"))
        lang = language_switch()
        page = st.radio(t("app.page"), list(PAGES), key="page",
                        format_func=lambda key: t(f"page.{key}", lang))
        kb_switcher(service())
    streamlit_texts_css()
    st.query_params["page"] = page
    show_flashes()
    PAGES[page]()
except KbqaError as exc:  # e.g. a broken config.toml: say so instead of a traceback
    st.error(str(exc))
