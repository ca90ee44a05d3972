"""Reliability suite (issue 15): `kbqa serve`, a CLI writer in another process and concurrent
readers on one knowledge base, for about a minute.

The CLI writer (tests/reliability_writer.py) ingests, removes and deletes/re-creates base 'rel'
in a loop; the test's own API writer uploads and removes documents through the server; readers
ask questions (hybrid retrieval: BM25 and the vector index both) and list documents meanwhile.
Every document name is used once, so a cited name says which write it came from. Checked:
no answer and no listing ever names a document whose removal had returned before the request
was sent; no 500 (nor anything but 200, 404 while the base is deleted, 409 while the server is
writing it, 503 when the queue is full); and at the end SQLite, the vector index and BM25 hold
the same chunks, in the server's open copy and in a fresh one. It runs in the normal suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kbqa.kb.store import KnowledgeBase
from kbqa.retrieval.bm25 import bm25_index
from tests.reliability_writer import KB, doc_text
from tests.serve_support import Server, kbqa_server

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("KBQA_RELIABILITY_SECONDS", "45"))
QUESTION = "停车位每月收费多少元？"
ALLOWED = {200, 404, 409, 503}


@dataclass
class Seen:
    """What one request saw: when it was sent, its status, the document names it named."""

    sent: float
    status: int
    names: list[str] = field(default_factory=list)
    chat: bool = False
    what: str = ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llm_folder: Path) -> Iterator[Server]:
    with kbqa_server(tmp_path_factory.mktemp("reliability-home"), tiny_llm_folder,
                     max_new_tokens=1, serve_queue=16, retrieval_mode="hybrid",
                     top_k=8) as running:
        yield running


def _headers(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_key}"}


def _reader(server: Server, stop: threading.Event, seen: list[Seen], chat: bool) -> None:
    with httpx.Client(base_url=server.url, headers=_headers(server), timeout=120) as client:
        while not stop.is_set():
            sent = time.monotonic()
            if chat:
                response = client.post("/v1/chat/completions", json={
                    "model": "plain", "kb": KB, "messages": [{"role": "user", "content": QUESTION}]})
                names = ([Path(s["document"]).stem for s in response.json().get("sources", [])]
                         if response.status_code == 200 else [])
            else:
                response = client.get(f"/v1/kbs/{KB}/documents")
                names = ([Path(d["name"]).stem for d in response.json()["data"]]
                         if response.status_code == 200 else [])
            seen.append(Seen(sent, response.status_code, names, chat,
                             response.text[:300] if response.status_code != 200 else ""))


def _api_writer(server: Server, stop: threading.Event, removed: dict[str, float],
                statuses: list[tuple[int, str]]) -> None:
    """Upload a new document, wait for its job, remove it; re-create the base when the CLI
    deleted it; a 409 (busy) is tried again."""
    with httpx.Client(base_url=server.url, headers=_headers(server), timeout=120) as client:
        number = 0
        while not stop.is_set():
            name = f"api{number}"
            number += 1
            sent = client.post(f"/v1/kbs/{KB}/documents", files={
                "files": (f"{name}.md", doc_text(name).encode(), "text/markdown")})
            statuses.append((sent.status_code, sent.text[:300]))
            if sent.status_code == 404:  # the CLI deleted the base: create it again
                created = client.post("/v1/kbs", json={"name": KB})
                statuses.append((created.status_code, created.text[:300]))
            if sent.status_code != 202:
                time.sleep(0.3)
                continue
            job = sent.json()
            while job.get("status") in ("queued", "running"):
                time.sleep(0.1)
                job = client.get(f"/v1/kbs/{KB}/jobs/{job['id']}").json()  # 404: base deleted
            time.sleep(0.5)
            for _ in range(20):
                response = client.delete(f"/v1/kbs/{KB}/documents/{name}.md")
                statuses.append((response.status_code, response.text[:300]))
                if response.status_code == 200:
                    removed[name] = time.monotonic()
                if response.status_code != 409:
                    break
                time.sleep(0.2)


def _cli_removals(events: Path) -> tuple[dict[str, float], bool]:
    removed: dict[str, float] = {}
    done = False
    for line in events.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event["event"] == "removed":
            for name in event["names"]:
                removed.setdefault(name, event["t"])
        done = done or event["event"] == "done"
    return removed, done


def _chunks_agree(kb: KnowledgeBase) -> tuple[int, int, int]:
    """(SQLite chunks, vectors, live BM25 rows), having checked they are the same chunk ids."""
    _, sql_ids, _ = kb.chunk_texts()
    vectors = kb.chunk_vectors(sql_ids)
    index = bm25_index(kb)
    bm25_ids = {int(i) for i in index.chunk_ids[index.alive]}
    assert set(vectors) == set(sql_ids) == bm25_ids
    return len(sql_ids), kb._vectors.count(), len(bm25_ids)


def test_readers_never_see_removed_documents_and_the_indexes_agree(
        server: Server, tmp_path: Path) -> None:
    events, docs = tmp_path / "events.jsonl", tmp_path / "docs"
    docs.mkdir()
    events.touch()
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability_writer", str(server.home), str(docs),
         str(events), str(SECONDS)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    seen: list[Seen] = []
    api_removed: dict[str, float] = {}
    api_statuses: list[tuple[int, str]] = []
    crashed: list[BaseException] = []

    def guarded(target: Callable[..., None], *args: object) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - a client thread failing fails the test
                crashed.append(exc)
        return threading.Thread(target=run)

    threads = [guarded(_reader, server, stop, seen, chat) for chat in (True, True, False)]
    threads.append(guarded(_api_writer, server, stop, api_removed, api_statuses))
    for thread in threads:
        thread.start()
    try:
        output, _ = writer.communicate(timeout=SECONDS + 240)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert writer.returncode == 0, output
    assert not crashed, crashed
    cli_removed, done = _cli_removals(events)

    removed = {**cli_removed, **api_removed}
    chats = [s for s in seen if s.chat]
    bad = [s for s in seen if s.status not in ALLOWED]
    assert not bad, bad[:5]
    assert not [(code, text) for code, text in api_statuses if code not in ALLOWED | {201, 202}]
    stale = [(s, name) for s in seen for name in s.names
             if name in removed and removed[name] < s.sent]
    assert not stale, stale[:5]
    assert sum(1 for s in chats if s.status == 200 and s.names) >= 10
    assert done and len(cli_removed) >= 3, "the CLI writer did too little to test anything"
    statuses = sorted({s.status for s in seen})
    print(f"reliability: {len(seen)} reads ({len(chats)} chats), statuses {statuses}, "
          f"{len(cli_removed)} CLI and {len(api_removed)} API removals, API writer statuses "
          f"{sorted(Counter(code for code, _ in api_statuses).items())}")

    # at rest: one set of chunks in SQLite, the vector index and BM25, as the server has the
    # base open and as a fresh reader opens it
    while any(job.status in ("queued", "running")
              for job in server.state.jobs.recent(KB, 100)):
        time.sleep(0.2)
    service = server.state.service
    counts = _chunks_agree(service.knowledge_base(KB))  # the writer's last step ingests
    assert counts[0] == counts[1] == counts[2] > 0
    with KnowledgeBase.open(service.settings.kb_root, KB, service.embeddings) as fresh:
        assert _chunks_agree(fresh) == counts
        names = {Path(r.source).stem for r in fresh.documents()}
    assert "clifinal" in names and not names & set(removed)
