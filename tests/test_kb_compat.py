"""A knowledge base written by the previous release still opens, answers and takes writes.

tests/data/kb-written-by-9974114/ was made by kbqa at commit 9974114 (the last release before the
package moved into kbqa/kb/, kbqa/llm/, ...), with this file's fake embedder: hangzhou.txt,
beijing.txt and notes/tea.md ingested from /tmp/oldkb-docs, then beijing.txt removed
(generation 2, FAISS index file index.2.faiss).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kbqa.kb.store import KnowledgeBase
from kbqa.retrieval.search import search
from tests.test_store import fake_embeddings, write

WRITTEN_BY_PREVIOUS = Path(__file__).parent / "data" / "kb-written-by-9974114"


@pytest.fixture
def legacy_root(tmp_path: Path) -> Path:
    root = tmp_path / "kbs"
    shutil.copytree(WRITTEN_BY_PREVIOUS, root)
    return root


def test_previous_release_base_opens_with_its_documents(legacy_root: Path) -> None:
    with KnowledgeBase.open(legacy_root, "legacy", fake_embeddings()) as kb:
        assert kb.generation == 2
        assert [d.filename for d in kb.documents()] == ["hangzhou.txt", "tea.md"]
        assert kb.chunk_count == 2
        for mode in ("bm25", "dense", "hybrid"):
            found = search(kb, "西湖在哪里", mode=mode, k=1)
            assert found and "西湖" in found[0].page_content, mode


def test_previous_release_base_takes_new_writes(legacy_root: Path, tmp_path: Path) -> None:
    with KnowledgeBase.open(legacy_root, "legacy", fake_embeddings()) as kb:
        new = write(tmp_path / "docs" / "suzhou.txt", "苏州园林以拙政园和留园最为著名。")
        assert [r.status for r in kb.ingest([new])] == ["added"]
        assert kb.remove_document("/tmp/oldkb-docs/notes/tea.md") == 1
        assert [d.filename for d in kb.documents()] == ["hangzhou.txt", "suzhou.txt"]
        assert kb.generation == 4
    with KnowledgeBase.open(legacy_root, "legacy", fake_embeddings()) as reopened:
        assert "拙政园" in search(reopened, "拙政园", mode="bm25", k=1)[0].page_content
