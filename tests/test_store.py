"""KnowledgeBase: lifecycle, incremental ingest, atomic saves, locking, LangChain interface.

Every test that goes through a KnowledgeBase runs once per vector store (the `vector_store`
fixture in conftest.py): FAISS, and Milvus Lite when pymilvus and milvus-lite are installed.
"""

from __future__ import annotations

import pickle
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document

from kbqa.embeddings.embedders import EncoderEmbeddings
from kbqa.errors import KnowledgeBaseError
from kbqa.kb.folders import validate_name
from kbqa.kb import folders
from kbqa.kb.store import KnowledgeBase
from kbqa.vector_backends import VectorStoreConfig

REPO = Path(__file__).resolve().parents[1]


class BigramHashEncoder:
    """Deterministic, instant stand-in for a real embedder: hashed character bigrams, 64-d.

    Texts sharing many bigrams get a high cosine, which is all the store's tests need.
    `calls` records every batch, so tests can see what was (re-)embedded.
    """

    def __init__(self, dimension: int = 64) -> None:
        self.dimension = dimension
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for pair in zip(text, text[1:]):
                out[row, zlib.crc32("".join(pair).encode("utf-8")) % self.dimension] += 1.0
        return out

    @property
    def embedded_texts(self) -> list[str]:
        return [text for batch in self.calls for text in batch]


def fake_embeddings(encoder: BigramHashEncoder | None = None,
                    name: str = "fake-bigram-64") -> EncoderEmbeddings:
    encoder = encoder or BigramHashEncoder()
    return EncoderEmbeddings(encoder, name=name, dimension=encoder.dimension, batch_size=8)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


DOCS = {
    "hangzhou.txt": "杭州是浙江省的省会，西湖位于杭州市西部，是中国著名的风景名胜区。",
    "beijing.txt": "北京是中华人民共和国的首都，故宫是明清两代的皇家宫殿。",
    "notes/tea.md": "# 龙井茶\n\n龙井茶产于杭州西湖一带，属于绿茶，以色绿、香郁、味甘、形美著称。",
}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    for name, text in DOCS.items():
        write(folder / name, text)
    return folder


@pytest.fixture
def kb(tmp_path: Path, vector_store: VectorStoreConfig) -> KnowledgeBase:
    with KnowledgeBase.create(tmp_path / "kbs", "kb", fake_embeddings(),
                              chunk_size=60, chunk_overlap=10, vector_store=vector_store) as base:
        yield base


def statuses(results) -> dict[str, str]:
    return {Path(r.path).name: r.status for r in results}


def assert_consistent(base: KnowledgeBase) -> None:
    base._refresh()
    assert not base._vectors.interrupted
    assert base._vectors.count() == base.chunk_count


# ------------------------------------------------------------------ lifecycle


def test_create_open_list_delete(tmp_path: Path, vector_store: VectorStoreConfig) -> None:
    root = tmp_path / "kbs"
    assert folders.list_names(root) == []
    KnowledgeBase.create(root, "知识库", fake_embeddings(), vector_store=vector_store).close()
    KnowledgeBase.create(root, "alpha", fake_embeddings(), chunk_size=100, chunk_overlap=0,
                         vector_store=vector_store).close()
    assert folders.list_names(root) == ["alpha", "知识库"]
    with pytest.raises(KnowledgeBaseError, match="already exists"):
        KnowledgeBase.create(root, "alpha", fake_embeddings())
    with KnowledgeBase.open(root, "alpha", fake_embeddings()) as base:
        assert (base.chunk_size, base.chunk_overlap, base.chunk_count) == (100, 0, 0)
    with KnowledgeBase.open_or_create(root, "alpha", fake_embeddings(), chunk_size=7) as base:
        assert base.chunk_size == 100
    folders.delete_kb(root, "alpha")
    assert folders.list_names(root) == ["知识库"]
    assert [p.name for p in root.iterdir()] == ["知识库"]
    with pytest.raises(KnowledgeBaseError, match="no knowledge base named 'alpha'"):
        KnowledgeBase.open(root, "alpha", fake_embeddings())


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a\\b", "..", "x" * 65, " lead",
                                  "trail ", "a:b", "nul\x00"])
def test_bad_names_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(KnowledgeBaseError, match="invalid knowledge base name"):
        KnowledgeBase.create(tmp_path, name, fake_embeddings())
    assert list(tmp_path.iterdir()) == []


def test_good_names_accepted() -> None:
    for name in ["default", "我的知识库", "kb-2024_v1.0", "x" * 64]:
        assert validate_name(name) == name


def test_other_embedder_refused(tmp_path: Path, vector_store: VectorStoreConfig) -> None:
    KnowledgeBase.create(tmp_path, "kb", fake_embeddings(), vector_store=vector_store).close()
    other = fake_embeddings(BigramHashEncoder(32), name="other-model")
    with pytest.raises(KnowledgeBaseError, match="fake-bigram-64.*other-model"):
        KnowledgeBase.open(tmp_path, "kb", other)


# ------------------------------------------------------------------ documents


def test_add_skip_update_remove_sync(kb: KnowledgeBase, docs: Path) -> None:
    write(docs / ".hidden" / "secret.txt", "不应被收录的隐藏文件内容。")
    write(docs / "ignored.xyz", "unknown extension inside a folder is skipped")
    first = kb.ingest([docs])
    assert statuses(first) == {"hangzhou.txt": "added", "beijing.txt": "added", "tea.md": "added"}
    assert all(r.chunks >= 1 and r.error is None for r in first)
    assert [d.filename for d in kb.documents()] == ["beijing.txt", "hangzhou.txt", "tea.md"]
    total = kb.chunk_count
    assert total == sum(d.chunks for d in kb.documents())
    assert_consistent(kb)

    again = kb.ingest([docs])
    assert set(statuses(again).values()) == {"skipped"}
    assert kb.last_ingest_stats.embedded == 0

    encoder = kb.embeddings.encoder
    encoder.calls.clear()
    write(docs / "hangzhou.txt", DOCS["hangzhou.txt"] + "\n\n灵隐寺是杭州最早的名刹，始建于东晋。" * 3)
    updated = kb.ingest([docs / "hangzhou.txt"])
    assert statuses(updated) == {"hangzhou.txt": "updated"}
    assert all("灵隐寺" in text for text in encoder.embedded_texts)  # unchanged text came from the cache
    assert kb.similarity_search("灵隐寺始建于东晋", k=1)[0].metadata["filename"] == "hangzhou.txt"
    assert_consistent(kb)

    removed = kb.remove_document(docs / "beijing.txt")
    assert removed >= 1
    assert "beijing.txt" not in {d.filename for d in kb.documents()}
    assert all(doc.metadata["filename"] != "beijing.txt" for doc in kb.similarity_search("北京故宫", k=10))
    with pytest.raises(KnowledgeBaseError, match="not in knowledge base"):
        kb.remove_document(docs / "beijing.txt")

    (docs / "notes" / "tea.md").unlink()
    synced = kb.sync(docs)
    assert statuses(synced) == {"hangzhou.txt": "skipped", "beijing.txt": "added", "tea.md": "removed"}
    assert [d.filename for d in kb.documents()] == ["beijing.txt", "hangzhou.txt"]
    assert_consistent(kb)


def test_updated_file_reembeds_only_new_chunks(kb: KnowledgeBase, tmp_path: Path) -> None:
    paragraphs = [f"第{i}段：这是用于测试嵌入缓存的段落，内容各不相同，编号{i}。" for i in range(6)]
    path = write(tmp_path / "long.txt", "\n\n".join(paragraphs))
    kb.ingest([path])
    first = kb.last_ingest_stats
    assert first.embedded == first.chunks > 2
    write(path, "\n\n".join(paragraphs + ["新增的最后一段，只有它需要重新嵌入。"]))
    kb.ingest([path])
    second = kb.last_ingest_stats
    assert second.cached >= first.chunks - 1
    assert 1 <= second.embedded <= 2


def test_failed_files_do_not_stop_the_batch(kb: KnowledgeBase, docs: Path, tmp_path: Path) -> None:
    kb.ingest([docs / "beijing.txt"])
    before = kb.documents()
    empty = write(tmp_path / "empty.txt", "")
    unknown = write(tmp_path / "data.xyz", "something")
    results = kb.ingest([empty, unknown, docs / "hangzhou.txt", tmp_path / "missing.txt"])
    by_name = {Path(r.path).name: r for r in results}
    assert by_name["hangzhou.txt"].status == "added"
    for name in ["empty.txt", "data.xyz", "missing.txt"]:
        assert by_name[name].status == "failed" and name in by_name[name].error
    assert "unsupported" in by_name["data.xyz"].error

    write(docs / "beijing.txt", "")  # a stored file breaks: its old chunks must stay
    results = kb.ingest([docs / "beijing.txt"])
    assert results[0].status == "failed"
    stored = {d.filename: d for d in kb.documents()}
    assert stored["beijing.txt"] == before[0]
    assert kb.similarity_search("北京故宫皇家宫殿", k=1)[0].metadata["filename"] == "beijing.txt"
    assert_consistent(kb)


# ------------------------------------------------------------------ atomicity


_CRASH_SCRIPT = """
import importlib, os, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
import kbqa.kb.store as store
from tests.test_store import fake_embeddings

def crash(*args, **kwargs):
    os._exit(17)

module, _, attribute = {target!r}.partition(":")
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
setattr(owner, name, crash)
kb = store.KnowledgeBase.open({root!r}, "kb", fake_embeddings())
kb.ingest([Path({path!r})])
"""

# Where each store's write is after the SQLite commit, before its clean-up (the KB lock is held).
AFTER_COMMIT = {"faiss": "kbqa.vector_backends.faiss_backend:_remove_stale_files",
                "milvus": "kbqa.vector_backends.milvus_backend:MilvusBackend.publish"}


def _crash_during_ingest(root: Path, path: Path, target: str) -> None:
    """Ingest `path` in a subprocess that dies (os._exit) when it reaches `target` (module:attr)."""
    script = _CRASH_SCRIPT.format(repo=str(REPO), root=str(root), path=str(path), target=target)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr


def test_crash_before_commit_keeps_previous_state(tmp_path: Path, docs: Path,
                                                  vector_store: VectorStoreConfig) -> None:
    root = tmp_path / "kbs"
    with KnowledgeBase.create(root, "kb", fake_embeddings(), vector_store=vector_store) as base:
        base.ingest([docs / "beijing.txt"])
        before, generation = base.documents(), base.generation
    _crash_during_ingest(root, docs / "hangzhou.txt", target="kbqa.kb.manifest:commit")
    if vector_store.kind == "faiss":
        assert (root / "kb" / f"index.{generation + 1}.faiss").exists()  # written, never committed
    else:  # the vectors went in, and the journal says which ids to check against the manifest
        assert (root / "kb" / "milvus.pending.json").exists()

    with KnowledgeBase.open(root, "kb", fake_embeddings()) as base:
        assert base.documents() == before and base.generation == generation
        assert_consistent(base)
        assert base.similarity_search("北京故宫", k=1)[0].metadata["filename"] == "beijing.txt"
        assert statuses(base.ingest([docs / "hangzhou.txt"])) == {"hangzhou.txt": "added"}
        assert_consistent(base)
    index_files = sorted(p.name for p in (root / "kb").glob("*.faiss"))
    assert index_files == ([f"index.{generation + 1}.faiss"] if vector_store.kind == "faiss" else [])


def test_crash_after_commit_keeps_new_state(tmp_path: Path, docs: Path,
                                            vector_store: VectorStoreConfig) -> None:
    root = tmp_path / "kbs"
    KnowledgeBase.create(root, "kb", fake_embeddings(), vector_store=vector_store).close()
    _crash_during_ingest(root, docs / "hangzhou.txt", target=AFTER_COMMIT[vector_store.kind])
    with KnowledgeBase.open(root, "kb", fake_embeddings()) as base:
        assert [d.filename for d in base.documents()] == ["hangzhou.txt"]
        assert_consistent(base)


def test_inconsistent_index_is_detected_and_repaired(kb: KnowledgeBase, docs: Path,
                                                     vector_store: VectorStoreConfig) -> None:
    kb.ingest([docs])
    root, generation, count = kb.folder.parent, kb.generation, kb.chunk_count
    if vector_store.kind == "milvus":  # vectors lost behind kbqa's back
        kb._vectors._client.delete(kb._vectors.collection, ids=[1, 2])
    kb.close()
    if vector_store.kind == "faiss":
        (root / "kb" / f"index.{generation}.faiss").unlink()
    with pytest.raises(KnowledgeBaseError, match="repair=True"):
        KnowledgeBase.open(root, "kb", fake_embeddings())
    encoder = BigramHashEncoder()
    with KnowledgeBase.open(root, "kb", fake_embeddings(encoder), repair=True) as base:
        assert base.chunk_count == count
        assert_consistent(base)
        assert encoder.calls == []  # every vector came from the embedding cache
        assert base.similarity_search("西湖龙井", k=1)[0].metadata["filename"] == "tea.md"


# ------------------------------------------------------------------ concurrency


class BlockingEncoder(BigramHashEncoder):
    """Holds the writer inside its lock until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(20)
        return super().encode(texts)


def test_second_writer_times_out_and_reader_sees_new_generation(
        tmp_path: Path, docs: Path, vector_store: VectorStoreConfig) -> None:
    root = tmp_path / "kbs"
    KnowledgeBase.create(root, "kb", fake_embeddings(), vector_store=vector_store).close()
    blocking = BlockingEncoder()
    slow_writer = KnowledgeBase.open(root, "kb", fake_embeddings(blocking))
    other = KnowledgeBase.open(root, "kb", fake_embeddings(), lock_timeout=0.3)
    thread = threading.Thread(target=slow_writer.ingest, args=([docs / "beijing.txt"],))
    thread.start()
    try:
        assert blocking.entered.wait(20)
        with pytest.raises(KnowledgeBaseError, match="locked by another writer"):
            other.ingest([docs / "hangzhou.txt"])
        assert other.chunk_count == 0  # readers keep working during the write
    finally:
        blocking.release.set()
        thread.join(20)
    assert other.similarity_search("北京故宫", k=1)[0].metadata["filename"] == "beijing.txt"
    assert statuses(other.ingest([docs / "hangzhou.txt"])) == {"hangzhou.txt": "added"}
    slow_writer.close()
    other.close()


# ------------------------------------------------------------------ persistence format


def _starts_a_pickle(data: bytes) -> bool:
    """Pickle protocols 2-5 open with the PROTO opcode (0x80) and the protocol number."""
    return len(data) >= 2 and data[0] == pickle.PROTO[0] and 2 <= data[1] <= 5


def pickles_under(folder: Path) -> tuple[list[str], list[Path], int]:
    """Every pickle stream stored under `folder`: a file that starts with one, or a value in any
    table of any SQLite database (found by its header, whatever its name) that does. Also
    returns the files and the number of SQLite BLOB values looked at."""
    found: list[str] = []
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    blobs = 0
    for path in files:
        with path.open("rb") as stream:
            head = stream.read(16)
        if _starts_a_pickle(head):
            found.append(str(path.relative_to(folder)))
        if not head.startswith(b"SQLite format 3\x00"):
            continue
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for row in db.execute(f'SELECT * FROM "{table}"'):
                    for value in row:
                        if isinstance(value, bytes):
                            blobs += 1
                            if _starts_a_pickle(value):
                                found.append(f"{path.relative_to(folder)}:{table}")
        finally:
            db.close()
    return found, files, blobs


def test_no_pickle_anywhere(tmp_path: Path, docs: Path, vector_store: VectorStoreConfig) -> None:
    """Everything kbqa persists in its home (config, API keys, a knowledge base after ingest,
    upload, removal and queries: chunks, BM25 counts, the real embedder's cache, the vector
    index; ingestion jobs) holds no pickle stream, in any file or any SQLite BLOB. The detector
    flags real pickles planted in files and in the knowledge base's own embedding cache."""
    from kbqa.config import load_settings
    from kbqa.server.auth import add_key
    from kbqa.server.jobstore import JobStore
    from kbqa.service import KbqaService

    service = KbqaService(load_settings({"vector_store": vector_store.kind}))
    service.update_settings({"retrieval_mode": "hybrid", "top_k": 2})
    home = service.settings.home
    assert service.ingest([docs], "kb")
    outcomes = service.ingest_uploads("kb", [("价格.txt", "标准版每年九百九十元。".encode("utf-8")),
                                             ("旧.txt", "这份文件随后被删除。".encode("utf-8"))])
    assert [o.status for o in outcomes] == ["added", "added"]
    kb = service.knowledge_base("kb")
    gone = next(d.source for d in kb.documents() if d.filename == "旧.txt")
    assert service.remove_document("kb", gone) >= 1
    assert service.retrieve("杭州西湖在哪里？", "kb")
    kb.close()
    jobs = JobStore(home / "serve")
    job = jobs.add("kb", ["价格.txt"])
    jobs.update(job.id, "done", outcomes=[{"name": "价格.txt", "status": "added"}])
    jobs.close()
    add_key(service.settings.keys_path, "ci", ["kb"])

    reopened = KbqaService(load_settings())  # what was persisted is what a new process reads
    assert reopened.settings.retrieval.mode == "hybrid"
    hits = reopened.retrieve("龙井茶产于哪里？", "kb")
    assert hits and hits[0].metadata["filename"] == "tea.md"
    reopened.knowledge_base("kb").close()

    found, files, blobs = pickles_under(home)
    assert found == []
    names = {p.name for p in files}
    assert {"config.toml", "api_keys.json", "kb.sqlite3", "jobs.sqlite3", "价格.txt"} <= names
    if vector_store.kind == "faiss":
        assert any(name.endswith(".faiss") for name in names)
    assert blobs >= 5  # the embedding cache's vectors, BM25 rows, ... were read

    # positive control: the same detector flags real pickles, in files and in kbqa's own tables
    control = tmp_path / "control"
    shutil.copytree(home / "kb" / "kb", control, ignore=shutil.ignore_patterns(".lock", "milvus.db"))
    vector = np.ones(4, dtype=np.float32)
    for protocol in range(2, 6):
        (control / f"cache-{protocol}.bin").write_bytes(pickle.dumps({"v": vector}, protocol=protocol))
    db = sqlite3.connect(control / "kb.sqlite3")
    with db:
        db.execute("UPDATE embedding_cache SET vector = ? WHERE text_sha256 = "
                   "(SELECT MIN(text_sha256) FROM embedding_cache)", (pickle.dumps(vector, protocol=2),))
    db.close()
    found, _, _ = pickles_under(control)
    assert sorted(found) == [f"cache-{p}.bin" for p in range(2, 6)] + ["kb.sqlite3:embedding_cache"]


# ------------------------------------------------------------------ LangChain interface


def test_similarity_scores_are_cosine(kb: KnowledgeBase, docs: Path) -> None:
    kb.ingest([docs])
    hits = kb.similarity_search_with_score(DOCS["beijing.txt"], k=3)
    assert hits[0][0].metadata["filename"] == "beijing.txt"
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    relevance = kb.similarity_search_with_relevance_scores(DOCS["beijing.txt"], k=3)
    assert all(0.0 <= s <= 1.0 for _, s in relevance)
    vector = kb.embeddings.embed_query(DOCS["beijing.txt"])
    assert kb.similarity_search_by_vector(vector, k=1)[0].metadata["filename"] == "beijing.txt"
    assert kb.as_retriever(search_kwargs={"k": 2}).invoke("龙井茶")[0].metadata["filename"] == "tea.md"


def test_add_texts_get_by_ids_delete(tmp_path: Path, vector_store: VectorStoreConfig) -> None:
    base = KnowledgeBase.from_texts(["苹果是一种水果", "汽车是交通工具"], fake_embeddings(),
                                    metadatas=[{"kind": "fruit"}, {"kind": "car"}],
                                    ids=["a", "b"], root=tmp_path, vector_store=vector_store)
    assert [d.page_content for d in base.get_by_ids(["b", "a", "zzz"])] == ["汽车是交通工具", "苹果是一种水果"]
    assert base.get_by_ids(["a"])[0].metadata["kind"] == "fruit"
    base.add_texts(["苹果是红色的水果"], ids=["a"])  # same id: replaced, not duplicated
    assert base.chunk_count == 2 and base.get_by_ids(["a"])[0].page_content == "苹果是红色的水果"
    auto_ids = base.add_documents([Document(page_content="香蕉也是水果")])
    assert base.chunk_count == 3 and base.get_by_ids(auto_ids)[0].page_content == "香蕉也是水果"
    base.delete(["b"])
    assert base.get_by_ids(["b"]) == [] and base.chunk_count == 2
    assert_consistent(base)
    base.delete()
    assert base.chunk_count == 0
    assert_consistent(base)
    base.close()


def test_real_embedder_ranks_chinese_texts(tmp_path: Path, vector_store: VectorStoreConfig) -> None:
    from kbqa.embeddings.embedders import load_embedded_default

    embeddings = load_embedded_default()
    texts = ["猫是一种常见的宠物，喜欢吃鱼。", "上海是中国最大的城市之一。", "Python 是一种编程语言。"]
    with KnowledgeBase.from_texts(texts, embeddings, root=tmp_path, name="real",
                                  vector_store=vector_store) as base:
        doc, score = base.similarity_search_with_score("哪种动物喜欢吃鱼？", k=1)[0]
        assert doc.page_content == texts[0] and 0.0 < score <= 1.0
    with pytest.raises(KnowledgeBaseError, match="usem3-multilingual-v3"):
        KnowledgeBase.open(tmp_path, "real", fake_embeddings())
