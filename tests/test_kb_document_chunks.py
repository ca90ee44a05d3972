"""A document's chunks in order: what the web app's chunk viewer reads (KnowledgeBase.document_chunks)."""

from __future__ import annotations

from pathlib import Path

from kbqa.kb.store import KnowledgeBase
from kbqa.vector_backends import VectorStoreConfig
from tests.test_store import DOCS, fake_embeddings, write


def test_document_chunks_in_order_after_an_update(tmp_path: Path,
                                                  vector_store: VectorStoreConfig) -> None:
    """One document's chunks in the order it was split, still so after the file is updated (its
    new chunks get new ids), none of another document's; none for a file not in the base."""
    docs = tmp_path / "docs"
    for name, text in DOCS.items():
        write(docs / name, text)
    with KnowledgeBase.create(tmp_path / "kbs", "kb", fake_embeddings(), chunk_size=60,
                              chunk_overlap=10, vector_store=vector_store) as kb:
        kb.ingest([docs])
        path = docs / "hangzhou.txt"
        sentences = [f"第{n}段：杭州的第{n}个景点在西湖边，每年接待很多游客。" for n in range(1, 9)]
        write(path, "\n\n".join(sentences))
        kb.ingest([path])
        chunks = kb.document_chunks(str(path))
        [record] = [d for d in kb.documents() if d.filename == "hangzhou.txt"]
        assert len(chunks) == record.chunks > 2
        assert [c.metadata["chunk_index"] for c in chunks] == list(range(len(chunks)))
        assert {c.metadata["filename"] for c in chunks} == {"hangzhou.txt"}
        text = "".join(c.page_content for c in chunks)
        positions = [text.find(f"第{n}段") for n in range(1, 9)]
        assert -1 not in positions and positions == sorted(positions)
        assert kb.document_chunks(str(docs / "missing.txt")) == []
