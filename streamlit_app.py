"""kbqa web front end (minimal until the UI issue): ask a knowledge base, see the sources.

Run with `pip install -e ".[app]"` then `streamlit run streamlit_app.py`.
All logic lives in kbqa's service layer; this page only renders it.
"""

from __future__ import annotations

import streamlit as st

from kbqa.config import load_settings
from kbqa.errors import KbqaError
from kbqa.service import KbqaService


@st.cache_resource
def service() -> KbqaService:
    """One service (and so one loaded model) per server process."""
    return KbqaService(load_settings())


st.set_page_config(page_title="kbqa", page_icon="📚")
st.title("kbqa · 知识库问答")
question = st.chat_input("输入问题，例如：入职满一年的员工每年享有几天带薪年假？")
if question:
    st.chat_message("user").write(question)
    with st.chat_message("assistant"):
        try:
            events = service().stream(question)
            kind, sources = next(events)
            st.write_stream(value for kind, value in events if kind == "token")
            for number, source in enumerate(sources, start=1):
                with st.expander(f"[{number}] {source.location()}"):
                    st.write(source.snippet)
        except KbqaError as exc:
            st.error(str(exc))
