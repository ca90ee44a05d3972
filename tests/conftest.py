"""Shared fixtures: offline environment, a model cache reused across runs, tiny real models."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# The Milvus vector store is an extra (kbqa[milvus], also in dev); its tests skip without it.
HAVE_MILVUS = all(importlib.util.find_spec(name) for name in ("pymilvus", "milvus_lite"))
MILVUS_MISSING = 'Milvus Lite not installed: pip install "kbqa[milvus]"'

# Converted models are cached across test runs (the first conversion takes ~1 minute).
MODEL_CACHE = Path(os.environ.get("KBQA_TEST_CACHE", Path.home() / ".cache" / "kbqa-tests"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real ~/.kbqa or its config."""
    monkeypatch.setenv("KBQA_HOME", str(tmp_path / "kbqa-home"))
    for name in list(os.environ):
        if name.startswith("KBQA_") and name not in {"KBQA_HOME", "KBQA_TEST_CACHE"}:
            monkeypatch.delenv(name)


@pytest.fixture(params=["faiss", pytest.param("milvus", marks=pytest.mark.skipif(
    not HAVE_MILVUS, reason=MILVUS_MISSING))])
def vector_store(request: pytest.FixtureRequest):
    """Run a KnowledgeBase test once per vector store: FAISS, then Milvus Lite (whose data sits
    inside the knowledge base folder, so tmp_path isolates it like FAISS's files)."""
    from kbqa.vector_backends import VectorStoreConfig

    return VectorStoreConfig(request.param)


@pytest.fixture(scope="session")
def model_cache() -> Path:
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    return MODEL_CACHE


@pytest.fixture(scope="session")
def tiny_llm_folder(model_cache: Path) -> Path:
    """SmolLM2-135M-Instruct (llama architecture) converted from its PyPI GGUF: fast, real."""
    from kbqa.llm.loading import resolve_llm

    return resolve_llm("embedded:smollm2-135m-instruct", model_cache, "float32")


@pytest.fixture(scope="session")
def tiny_llm(tiny_llm_folder: Path):
    from kbqa.llm.local import LocalLLM

    return LocalLLM.from_folder(tiny_llm_folder, dtype="float32", max_new_tokens=12)


@pytest.fixture(scope="session")
def default_llm_folder(model_cache: Path) -> Path:
    """The default reader: Qwen2.5-Coder-0.5B with kbqa's reader adapter merged in."""
    from kbqa.llm.loading import resolve_llm

    return resolve_llm("embedded", model_cache)


@pytest.fixture(scope="session")
def plain_llm_folder(model_cache: Path) -> Path:
    """The default's base without the reader: the model the adapters in adapters/ were trained on."""
    from kbqa.llm.loading import PLAIN_DEFAULT_LLM, resolve_llm

    return resolve_llm(f"embedded:{PLAIN_DEFAULT_LLM}", model_cache)


# --- the real-browser tests (tests/browser_support.py); playwright is imported only when used ---

@pytest.fixture
def server(tmp_path: Path, plain_llm_folder: Path) -> Iterator[str]:
    """The web app with the default's plain base (Qwen2.5-Coder-0.5B), so the adapters in
    adapters/ fit it and Compare has a variant to offer; yields its URL."""
    from tests.browser_support import app_server

    with app_server(tmp_path, {"llm": str(plain_llm_folder)}) as url:
        yield url


@pytest.fixture
def tiny_server(tmp_path: Path, tiny_llm_folder: Path) -> Iterator[str]:
    """The web app with the tiny SmolLM2-135M (fast; for what the page does, not what it
    answers)."""
    from tests.browser_support import app_server

    with app_server(tmp_path, {"llm": str(tiny_llm_folder), "llm_dtype": "float32",
                               "max_new_tokens": 60}) as url:
        yield url


@pytest.fixture
def page(tmp_path: Path):
    """A page of Debian's chromium in a fresh profile, allowed to use the clipboard."""
    from playwright.sync_api import sync_playwright

    from tests.browser_support import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        # a fresh profile (--user-data-dir) per test, as playwright wants it passed
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
            permissions=["clipboard-read", "clipboard-write"], accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(180_000)
        yield page
        context.close()
