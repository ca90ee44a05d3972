"""kbqa web front end: `pip install -e ".[app]"` then `streamlit run streamlit_app.py`.

Thin on purpose: it picks a page and the knowledge base in use; the pages (kbqa/ui/) render what
kbqa's service layer returns.
A page can be opened directly with ?page=chat|knowledge|compare|evaluation|settings.
"""

from __future__ import annotations

import streamlit as st

from kbqa.errors import KbqaError
from kbqa.ui import chat, compare, evaluation, knowledge, settings
from kbqa.ui.common import kb_switcher, service, show_flashes

PAGES = {
    "chat": ("问答 / Chat", chat.render),
    "knowledge": ("知识库 / Knowledge bases", knowledge.render),
    "compare": ("对比 / Compare", compare.render),
    "evaluation": ("评测 / Evaluation", evaluation.render),
    "settings": ("设置 / Settings", settings.render),
}

st.set_page_config(page_title="kbqa", page_icon="📚", layout="wide")
if "page" not in st.session_state:
    wanted = st.query_params.get("page", "chat")
    st.session_state["page"] = wanted if wanted in PAGES else "chat"
try:
    with st.sidebar:
        st.title("kbqa · 知识库问答")
        page = st.radio("页面 / page", list(PAGES), format_func=lambda key: PAGES[key][0],
                        key="page")
        kb_switcher(service())
    st.query_params["page"] = page
    show_flashes()
    PAGES[page][1]()
except KbqaError as exc:  # e.g. a broken config.toml: say so instead of a traceback
    st.error(str(exc))
