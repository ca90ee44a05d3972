"""What every page shares: the one service per process, the knowledge base in use, messages that
outlive a rerun, and how a source is shown."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from functools import partial
from pathlib import Path

import streamlit as st

from kbqa.adapters.variants import Variant, adapter_fits
from kbqa.config import load_settings
from kbqa.errors import AdapterError, KbqaError, LoaderError
from kbqa.qa.answers import Source
from kbqa.qa.snippets import highlighted_markdown
from kbqa.service import KbqaService
from kbqa.ui.i18n import Language, language, t

# adapters/ next to streamlit_app.py (the repository's own adapters) is offered as well
REPO_ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
# the variant selectors' options are these labels (stable across languages); variant_text shows them
PLAIN_LABEL = "plain"
ADAPTER_PREFIX = "adapter: "
CONFIGURED_SUFFIX = " (configured)"
KB_KEY = "kb"                 # the sidebar's knowledge base selector
KB_PENDING_KEY = "kb_pending"  # a knowledge base to select at the next run (see select_kb)
FLASH_KEY = "flash"


@st.cache_resource(show_spinner=False)
def _service(home: str) -> KbqaService:
    """One service per data directory and process: models load once and are shared by sessions."""
    return KbqaService(load_settings({"home": home}))


def service() -> KbqaService:
    return _service(str(load_settings().home))


def _fitting(svc: KbqaService) -> tuple[list[Path], list[Path]]:
    """Adapter folders whose recorded base model is the configured one (or cannot be told), and
    those trained on another model."""
    fit, unfit = [], []
    for folder in svc.adapter_choices([REPO_ADAPTERS]):
        (unfit if adapter_fits(folder, svc.settings.llm.model) is False else fit).append(folder)
    return fit, unfit


def variant_options(svc: KbqaService) -> dict[str, Variant]:
    """Label → Variant: plain, each adapter that fits the model alone, and the configured stack."""
    options = {PLAIN_LABEL: Variant()}
    configured = svc.default_variant()
    if len(configured.adapters) > 1:
        options[configured.label + CONFIGURED_SUFFIX] = configured
    for folder in _fitting(svc)[0]:
        variant = Variant.of([folder])
        options.setdefault(ADAPTER_PREFIX + variant.label, variant)
    return options


def variant_text(label: str, lang: Language | None = None) -> str:
    """A variant selector's option as the user reads it, in their language."""
    if label == PLAIN_LABEL:
        return t("variant.plain", lang)
    if label.startswith(ADAPTER_PREFIX):
        return t("variant.adapter", lang, name=label.removeprefix(ADAPTER_PREFIX))
    if label.endswith(CONFIGURED_SUFFIX):
        return t("variant.configured", lang, name=label.removesuffix(CONFIGURED_SUFFIX))
    return label


def variant_formatter() -> Callable[[str], str]:
    """variant_text in this run's language, for a widget's format_func."""
    return partial(variant_text, lang=language())


def explain_unfit_adapters(svc: KbqaService) -> None:
    """One sentence naming the adapters left out because they were trained on another model."""
    unfit = _fitting(svc)[1]
    if unfit:
        st.caption(t("variant.unfit", count=len(unfit), names=t("common.list_separator").join(f.name for f in unfit)))


def default_variant_label(svc: KbqaService, options: dict[str, Variant]) -> int:
    configured = svc.default_variant()
    for index, variant in enumerate(options.values()):
        if variant == configured:
            return index
    return 0


def select_kb(name: str) -> None:
    """Make `name` the knowledge base in use from the next run on (the sidebar's selector is
    already drawn in this run, so its value cannot change until then)."""
    st.session_state[KB_PENDING_KEY] = name


def kb_switcher(svc: KbqaService) -> str | None:
    """The sidebar's knowledge base selector: the one knowledge base every page works on."""
    names = svc.list_knowledge_bases()
    pending = st.session_state.pop(KB_PENDING_KEY, None)
    if pending in names:
        st.session_state[KB_KEY] = pending
    if not names:
        st.session_state.pop(KB_KEY, None)
        return None
    if st.session_state.get(KB_KEY) not in names:
        default = svc.settings.kb.name
        st.session_state[KB_KEY] = default if default in names else names[0]
    return st.selectbox(t("kb.selector"), names, key=KB_KEY)


def current_kb(svc: KbqaService) -> str | None:
    """The knowledge base chosen in the sidebar; says how to make one when there is none."""
    kb = st.session_state.get(KB_KEY)
    if kb in svc.list_knowledge_bases():
        return kb
    st.info(t("kb.none"))
    return None


def flash(kind: str, text: str) -> None:
    """A message shown at the top of the next run (one that follows an st.rerun)."""
    st.session_state.setdefault(FLASH_KEY, []).append((kind, text))


def show_flashes() -> None:
    for kind, text in st.session_state.pop(FLASH_KEY, []):
        getattr(st, kind)(text)


def show_error(exc: KbqaError) -> None:
    """An error as one sentence; an adapter's long technical reason goes under a fold."""
    if isinstance(exc, AdapterError):
        st.error(t("adapter.mismatch"))
        with st.expander(t("common.details")):
            st.code(str(exc))
    else:
        st.error(str(exc))


def copy_button(text: str, key: str) -> None:
    """A copy button: it opens the answer in a code block, whose own copy icon (Streamlit's, no
    injected script) puts it on the clipboard."""
    with st.popover(t("answer.copy"), icon=":material/content_copy:", key=key,
                    help=t("answer.copy_help")):
        st.code(text, language=None, wrap_lines=True)


def kb_sources(svc: KbqaService, kb: str | None) -> set[str]:
    """The documents (server paths) a knowledge base holds now: only their files are offered."""
    if kb is None:
        return set()
    try:
        return {d.source for d in svc.knowledge_base(kb).documents()}
    except KbqaError:
        return set()


@st.cache_data(max_entries=32, show_spinner=False)
def _page_png(path: str, page: int, _mtime_ns: int) -> bytes:
    from kbqa.ingest.pdf import page_png

    return page_png(Path(path), page)


def original_file(source: str, filename: str, page: int | None, key: str) -> None:
    """A download button for the document's file as stored (never its server path), and for a
    PDF a switch showing the cited page as printed."""
    path = Path(source)
    if not path.is_file():
        st.caption(t("source.missing"))
        return
    st.download_button(t("source.download"), data=path.read_bytes, file_name=filename,
                       mime=mimetypes.guess_type(filename)[0] or "application/octet-stream",
                       key=f"{key}_file", on_click="ignore", icon=":material/download:")
    if page and path.suffix.lower() == ".pdf" and st.toggle(t("source.show_page", page=page),
                                                            key=f"{key}_page"):
        try:
            with st.spinner(t("source.rendering")):
                image = _page_png(str(path), int(page), path.stat().st_mtime_ns)
            st.image(image, caption=t("source.page_caption", file=filename, page=page))
        except LoaderError as exc:
            st.error(str(exc))


def render_sources(sources: list[Source], answer: str = "", *, documents: set[str] | None = None,
                   key: str = "sources") -> None:
    """Each cited passage under its file name and heading (never the server's path): a table as a
    table, the answer's words marked, the document's own text never taken as markup; the original
    file to open when it is one of `documents` (the knowledge base's, so a saved conversation
    never hands out a file since removed from it)."""
    if not sources:
        st.caption(t("sources.none"))
        return
    st.caption(t("sources.count", count=len(sources)))
    for number, source in enumerate(sources, start=1):
        score = "" if source.score is None else t("sources.score", score=source.score)
        with st.expander(f"[{number}] {source.location()}{score}"):
            # safe: highlighted_markdown escapes the passage; its only HTML is its own <mark>
            st.markdown(highlighted_markdown(source.snippet, answer), unsafe_allow_html=True)
            if documents is not None and source.source in documents:
                original_file(source.source, source.filename, source.page, f"{key}_{number}")
            elif documents is not None:
                st.caption(t("source.removed"))


def timing_text(timings: dict[str, float]) -> str:
    """'model load … · first token … · total …' (each part only when measured)."""
    load = t("timing.load", seconds=timings["load"]) if timings.get("load") else ""
    first = t("timing.first", seconds=timings["first_token"]) if "first_token" in timings else ""
    return load + first + t("timing.total", seconds=timings["total"])


def render_refusal() -> None:
    st.warning(t("answer.refused"), icon=":material/search_off:")
