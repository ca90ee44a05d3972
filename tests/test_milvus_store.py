"""The Milvus vector store: what the shared KnowledgeBase suite (test_store.py) cannot show.

The recorded backend wins on reopen; failed writes are compensated; interrupted ones are
recovered; Milvus Lite's one-process rule gives a clear error; a server URI (here Milvus Lite's
own gRPC server, the same protocol a cluster speaks) is shared by processes and its collection
dropped with the knowledge base.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kbqa.config import Settings
from kbqa.errors import KnowledgeBaseError
from kbqa.service import KbqaService
from kbqa.kb.folders import exclusive_lock
from kbqa.kb import folders
from kbqa.kb.store import KnowledgeBase
from kbqa.vector_backends import VectorStoreConfig
from tests.conftest import HAVE_MILVUS, MILVUS_MISSING
from tests.test_store import (DOCS, REPO, BigramHashEncoder, assert_consistent, fake_embeddings,
                              statuses, write)
from tests.test_store import docs  # noqa: F401  (the shared folder-of-documents fixture)

pytestmark = pytest.mark.skipif(not HAVE_MILVUS, reason=MILVUS_MISSING)

LITE = VectorStoreConfig("milvus")


@pytest.fixture
def lite_kb(tmp_path: Path, docs: Path) -> KnowledgeBase:
    with KnowledgeBase.create(tmp_path / "kbs", "kb", fake_embeddings(), vector_store=LITE) as kb:
        kb.ingest([docs / "beijing.txt"])
        yield kb


@pytest.fixture
def milvus_server(tmp_path: Path) -> str:
    """A Milvus endpoint over gRPC, as a cluster would offer (served by Milvus Lite)."""
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    server, db, port = start_server_in_thread(str(tmp_path / "server-data"))
    yield f"http://127.0.0.1:{port}"
    server.stop(grace=0)
    db.close()


def milvus_ids(kb: KnowledgeBase) -> set[int]:
    rows = kb._vectors._client.query(kb._vectors.collection, filter="id >= 0", output_fields=["id"])
    return {int(row["id"]) for row in rows}


def sqlite_ids(kb: KnowledgeBase) -> set[int]:
    return {row[0] for row in kb._conn.execute("SELECT id FROM chunks")}


def assert_in_step(kb: KnowledgeBase) -> None:
    """Milvus holds exactly the manifest's chunks, each with its text's cached vector."""
    assert_consistent(kb)
    assert milvus_ids(kb) == sqlite_ids(kb)
    texts = dict(kb._conn.execute("SELECT id, text FROM chunks"))
    stored = kb.chunk_vectors(texts)
    expected = kb.embeddings.embed_array(list(texts.values()))
    for (chunk_id, _), vector in zip(texts.items(), expected):
        assert np.allclose(stored[chunk_id], vector, atol=1e-6)


# ------------------------------------------------------------------ choosing the backend


def test_recorded_backend_wins_over_settings(tmp_path: Path, docs: Path) -> None:
    milvus_home = KbqaService(Settings(home=tmp_path / "home", vector_store="milvus"),
                              embeddings=fake_embeddings())
    milvus_home.ingest([docs], kb_name="m")
    milvus_home.knowledge_base("m").close()
    faiss_home = KbqaService(Settings(home=tmp_path / "home"), embeddings=fake_embeddings())
    faiss_home.ingest([docs], kb_name="f")
    reopened = faiss_home.knowledge_base("m")
    assert reopened.vector_store.startswith("milvus (Milvus Lite in ")
    assert reopened.index_kind == "autoindex"
    assert reopened.similarity_search("西湖龙井", k=1)[0].metadata["filename"] == "tea.md"
    reopened.close()
    again = KbqaService(Settings(home=tmp_path / "home", vector_store="milvus"),
                        embeddings=fake_embeddings())
    assert again.knowledge_base("f").vector_store.startswith("faiss (flat index")
    meta = dict(again.knowledge_base("f")._conn.execute("SELECT key, value FROM meta"))
    assert "vector_store" not in meta  # FAISS bases keep the manifest they always had
    again.knowledge_base("f").close()


def test_collection_names_are_safe_and_unique() -> None:
    from kbqa.vector_backends.milvus_backend import new_meta

    first, second = new_meta(None, "我的 知识库"), new_meta(None, "我的 知识库")
    assert first["milvus_collection"].startswith("kbqa_kb_")
    assert first["milvus_collection"] != second["milvus_collection"]
    assert new_meta("http://h:19530", "hr-docs v2")["milvus_collection"].startswith("kbqa_hr_docs_v2_")


def test_missing_pymilvus_names_the_extra(tmp_path: Path, lite_kb: KnowledgeBase,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    lite_kb.close()
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import pymilvus -> ImportError
    with pytest.raises(KnowledgeBaseError, match=r'pip install "kbqa\[milvus\]"'):
        KnowledgeBase.create(tmp_path / "kbs", "new", fake_embeddings(), vector_store=LITE)
    assert folders.list_names(tmp_path / "kbs") == ["kb"]  # nothing half-made
    with pytest.raises(KnowledgeBaseError, match=r'pip install "kbqa\[milvus\]"'):
        KnowledgeBase.open(tmp_path / "kbs", "kb", fake_embeddings())
    KnowledgeBase.create(tmp_path / "kbs", "plain", fake_embeddings()).close()  # FAISS needs none


# ------------------------------------------------------------------ keeping the stores in step


def test_failure_before_commit_is_compensated(lite_kb: KnowledgeBase, docs: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from kbqa.kb import manifest

    before = sqlite_ids(lite_kb)

    def fail(conn) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(manifest, "commit", fail)
    write(docs / "beijing.txt", DOCS["beijing.txt"] + "\n\n天坛是明清两代皇帝祭天的地方。")
    with pytest.raises(RuntimeError, match="disk full"):  # removes old chunks, adds new ones
        lite_kb.ingest([docs / "beijing.txt", docs / "hangzhou.txt"])
    assert sqlite_ids(lite_kb) == before
    assert_in_step(lite_kb)  # added vectors deleted, removed ones back from the cache
    monkeypatch.undo()
    assert statuses(lite_kb.ingest([docs])) == {"beijing.txt": "updated", "hangzhou.txt": "added",
                                                "tea.md": "added"}
    assert_in_step(lite_kb)


def test_failure_inside_milvus_is_compensated_or_left_for_the_next_write(
        lite_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    from pymilvus import MilvusException

    from kbqa.vector_backends.milvus_backend import MilvusBackend

    failing = {"_upsert": 0, "_delete": 0}  # how many more calls of each fail

    def flaky(name: str):
        real = getattr(MilvusBackend, name)

        def call(self, ids, *args) -> None:
            if ids and failing[name] > 0:
                failing[name] -= 1
                raise MilvusException(message="server went away")
            real(self, ids, *args)
        return call

    for name in failing:
        monkeypatch.setattr(MilvusBackend, name, flaky(name))
    lite_kb.add_texts(["西湖十景之一是断桥残雪。"], ids=["x"])
    failing["_upsert"] = 1  # replacing "x": its old vector is deleted, then the insert fails
    with pytest.raises(KnowledgeBaseError, match="server went away"):
        lite_kb.add_texts(["断桥残雪是西湖十景之一。"], ids=["x"])
    assert lite_kb.get_by_ids(["x"])[0].page_content == "西湖十景之一是断桥残雪。"
    assert_in_step(lite_kb)  # compensated at once: the old vector is back

    failing.update(_upsert=10**6, _delete=10**6)  # Milvus stays down: compensation fails too
    with pytest.raises(KnowledgeBaseError) as raised:
        lite_kb.add_texts(["雷峰塔位于西湖南岸。"], ids=["z"])
    assert any("next open or write retries" in note for note in raised.value.__notes__)
    assert lite_kb._vectors.interrupted
    failing.update(_upsert=0, _delete=0)  # back up: the next write first finishes the old one
    lite_kb.add_texts(["灵隐寺始建于东晋。"], ids=["y"])
    assert lite_kb.get_by_ids(["z"]) == []
    assert_in_step(lite_kb)


def test_open_waits_for_a_running_writer_before_recovering(lite_kb: KnowledgeBase) -> None:
    """A journal while the lock is held is a write in progress: readers neither undo it nor
    count it as damage; once the lock is free, the next write recovers it."""
    ids = sorted(sqlite_ids(lite_kb))
    journal = lite_kb.folder / "milvus.pending.json"
    lite_kb._vectors._client.delete(lite_kb._vectors.collection, ids=ids[:1])  # half-done write
    journal.write_text(f'{{"generation": 99, "rebuild": false, "ids": [{ids[0]}]}}')
    with exclusive_lock(lite_kb.folder / ".lock", 1, "kb"):
        with KnowledgeBase.open(lite_kb.folder.parent, "kb", fake_embeddings()) as other:
            assert other.chunk_count == len(ids) and journal.exists()
    lite_kb.add_texts(["雷峰塔位于西湖南岸。"])
    assert not journal.exists()
    assert_in_step(lite_kb)


def test_missing_collection_is_detected_and_rebuilt(lite_kb: KnowledgeBase) -> None:
    root, count = lite_kb.folder.parent, lite_kb.chunk_count
    lite_kb._vectors._client.drop_collection(lite_kb._vectors.collection)
    lite_kb.close()
    with pytest.raises(KnowledgeBaseError, match="collection .* is missing.*repair=True"):
        KnowledgeBase.open(root, "kb", fake_embeddings())
    encoder = BigramHashEncoder()
    with KnowledgeBase.open(root, "kb", fake_embeddings(encoder), repair=True) as kb:
        assert kb.chunk_count == count and encoder.calls == []
        assert_in_step(kb)


def test_truncated_lite_index_file_is_rebuilt(lite_kb: KnowledgeBase) -> None:
    """Milvus Lite writes index files in place from a background thread; a crash mid-write
    leaves one truncated. They are derived data: the next open rebuilds them."""
    root = lite_kb.folder.parent
    lite_kb.close()
    index_files = list((root / "kb" / "milvus.db").rglob("*.idx"))
    assert index_files
    index_files[0].write_bytes(b"")
    with KnowledgeBase.open(root, "kb", fake_embeddings()) as kb:
        assert kb.similarity_search("北京故宫", k=1)[0].metadata["filename"] == "beijing.txt"
        assert_in_step(kb)


# ------------------------------------------------------------------ processes


_OPEN_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from kbqa.errors import KnowledgeBaseError
from kbqa.kb.store import KnowledgeBase
from tests.test_store import fake_embeddings
try:
    kb = KnowledgeBase.open({root!r}, "kb", fake_embeddings())
except KnowledgeBaseError as exc:
    print("refused:", exc)
    sys.exit(3)
kb.ingest([Path({path!r})])
print("hits:", [d.metadata["filename"] for d in kb.similarity_search("西湖龙井", k=1)])
kb.close()
"""


def _open_in_subprocess(root: Path, path: Path) -> subprocess.CompletedProcess:
    script = _OPEN_SCRIPT.format(repo=str(REPO), root=str(root), path=str(path))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=120)


def test_milvus_lite_is_one_process_at_a_time(lite_kb: KnowledgeBase, docs: Path) -> None:
    proc = _open_in_subprocess(lite_kb.folder.parent, docs / "notes" / "tea.md")
    assert proc.returncode == 3, proc.stderr
    assert "open in another process" in proc.stdout and "http://HOST:19530" in proc.stdout
    assert_in_step(lite_kb)  # the refused process changed nothing


def test_server_uri_is_shared_by_processes_and_dropped_with_the_kb(
        tmp_path: Path, docs: Path, milvus_server: str) -> None:
    from pymilvus import MilvusClient

    config = VectorStoreConfig("milvus", milvus_uri=milvus_server)
    homes = [tmp_path / "home1" / "kb", tmp_path / "home2" / "kb"]
    kbs = [KnowledgeBase.create(root, "kb", fake_embeddings(), vector_store=config)
           for root in homes]
    collections = {kb._vectors.collection for kb in kbs}
    assert len(collections) == 2  # same name, two homes, one cluster: no collision
    assert not (kbs[0].folder / "milvus.db").exists()
    kbs[0].ingest([docs / "beijing.txt"])
    kbs[1].ingest([docs / "hangzhou.txt"])

    tea = write(tmp_path / "tea.txt", DOCS["notes/tea.md"])  # plain text: a quick subprocess
    proc = _open_in_subprocess(homes[0], tea)  # while this process has the base open
    assert proc.returncode == 0 and "hits: ['tea.txt']" in proc.stdout, proc.stderr + proc.stdout
    assert kbs[0].similarity_search("西湖龙井", k=1)[0].metadata["filename"] == "tea.txt"
    assert_in_step(kbs[0])
    assert {d.metadata["filename"] for d in kbs[1].similarity_search("西湖龙井", k=5)} == \
        {"hangzhou.txt"}

    for kb in kbs:
        kb.close()
    folders.delete_kb(homes[0], "kb")
    client = MilvusClient(uri=milvus_server)
    assert set(client.list_collections()) == collections - {kbs[0]._vectors.collection}
    client.close()


def test_an_unreachable_milvus_server_is_a_clear_error_and_leaves_nothing(tmp_path: Path):
    down = VectorStoreConfig("milvus", "http://127.0.0.1:1")  # nothing listens on port 1
    with pytest.raises(KnowledgeBaseError, match="cannot open Milvus at http://127.0.0.1:1"):
        KnowledgeBase.create(tmp_path / "kbs", "kb", fake_embeddings(), vector_store=down)
    assert folders.list_names(tmp_path / "kbs") == []
    assert not any((tmp_path / "kbs").iterdir())
