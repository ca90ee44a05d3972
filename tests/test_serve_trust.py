"""`kbqa serve` under careless and hostile use (issue 15): a base changed by another process,
anonymous bodies, deletes during writes, duplicate names, unknown routes, leaving clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.serve_support import Server, kbqa_server

REPO = Path(__file__).resolve().parents[1]
OLD = "# 旧版\n\n旧版规定：停车位每月收费三百元。\n"
NEW = "# 新版\n\n新版规定：停车位每月收费八十元，由物业登记。\n"
PARKING = "停车位每月收费多少元？"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llm_folder: Path) -> Iterator[Server]:
    with kbqa_server(tmp_path_factory.mktemp("trust-home"), tiny_llm_folder,
                     max_body_mb=1, max_question_chars=500) as running:
        yield running


def api(server: Server, method: str, path: str, key: str | None = None,
        **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or server.admin_key}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=120, **kwargs)


def upload(server: Server, kb: str, *files: tuple[str, str]) -> dict:
    """Upload and wait for the job; returns the finished job."""
    sent = api(server, "POST", f"/v1/kbs/{kb}/documents",
               files=[("files", (name, text.encode(), "text/markdown")) for name, text in files])
    assert sent.status_code == 202, sent.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = api(server, "GET", f"/v1/kbs/{kb}/jobs/{sent.json()['id']}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError("the ingestion job did not finish")


def documents(server: Server, kb: str, key: str | None = None) -> list[str]:
    response = api(server, "GET", f"/v1/kbs/{kb}/documents", key)
    assert response.status_code == 200, response.text
    return [d["name"] for d in response.json()["data"]]


def chat(server: Server, kb: str, question: str = PARKING, **extra: object) -> httpx.Response:
    return api(server, "POST", "/v1/chat/completions", json={
        "model": "plain", "kb": kb, "max_tokens": 2,
        "messages": [{"role": "user", "content": question}], **extra})


def cli(server: Server, *args: str) -> None:
    """The real `kbqa` CLI in another process, over the server's HOME."""
    env = {**os.environ, "KBQA_HOME": str(server.home), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "kbqa.cli", *args], check=True, env=env, cwd=REPO,
                   capture_output=True)


# ------------------------------------------------------------------ item 1: stale bases


def test_a_kb_removed_and_recreated_by_the_cli_is_served_as_it_is_now(
        server: Server, tmp_path: Path) -> None:
    assert api(server, "POST", "/v1/kbs", json={"name": "kbb"}).status_code == 201
    assert upload(server, "kbb", ("旧规定.md", OLD))["status"] == "done"
    assert documents(server, "kbb") == ["旧规定.md"]
    cli(server, "kb", "remove", "--kb", "kbb", "--yes")
    assert api(server, "GET", "/v1/kbs/kbb/documents").status_code == 404
    (tmp_path / "新规定.md").write_text(NEW, encoding="utf-8")
    cli(server, "ingest", str(tmp_path / "新规定.md"), "--kb", "kbb")
    assert documents(server, "kbb") == ["新规定.md"]
    answer = chat(server, "kbb")
    assert answer.status_code == 200
    assert [s["document"] for s in answer.json()["sources"]] == ["新规定.md"]
    # one API upload to the re-created base, then chat: no 500 (was "index.1.faiss is missing")
    assert upload(server, "kbb", ("补充.md", "# 补充\n\n访客停车需提前登记。\n"))["status"] == "done"
    assert sorted(documents(server, "kbb")) == ["新规定.md", "补充.md"]
    assert chat(server, "kbb").status_code == 200
    assert api(server, "DELETE", "/v1/kbs/kbb").status_code == 200


# ------------------------------------------------------------------ item 2: anonymous bodies


def _raw(server: Server, head: str, body: bytes = b"", wait: float = 10.0) -> str:
    """Send a request head (and the first bytes of a body) on a raw socket; the status line."""
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=wait) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        return sock.recv(4096).decode(errors="replace").split("\r\n")[0]


def test_a_body_without_a_key_is_refused_before_it_is_read(server: Server) -> None:
    """300 MB declared, 1 KB sent: the 401 comes at once, so the server never waited for (or
    held) the body; before, it read and parsed the whole body first."""
    head = ("POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Type: application/json\n"
            f"Content-Length: {300 * 1024 * 1024}\n")
    started = time.monotonic()
    assert _raw(server, head, b"{" + b" " * 1024).endswith("401 Unauthorized")
    assert time.monotonic() - started < 5


def test_json_bodies_and_messages_are_capped(server: Server) -> None:
    head = ("POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Type: application/json\n"
            f"Authorization: Bearer {server.hr_key}\nContent-Length: {2 * 1024 * 1024}\n")
    assert _raw(server, head, b"{").split(" ")[1] == "413"  # declared over 1 MB: not read
    chunked = httpx.post(server.url + "/v1/chat/completions", timeout=60,  # no length declared
                         content=iter([b'{"model": "plain", "messages": [' + b" " * 1024 * 1024,
                                       b" " * 1024 * 1024, b"]}"]),
                         headers={"Authorization": f"Bearer {server.hr_key}",
                                  "Content-Type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "too_large"
    too_long = chat(server, "hr", "年假" * 300)
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "message_too_long"
    assert chat(server, "hr", "年假" * 200).status_code == 200  # 400 characters: under 500


# ------------------------------------------------------------------ item 3: deletes during writes


def test_delete_during_an_ingest_is_409_at_once_and_other_kbs_are_unaffected(
        server: Server) -> None:
    service = server.state.service
    assert api(server, "POST", "/v1/kbs", json={"name": "slow"}).status_code == 201
    assert upload(server, "slow", ("a.md", OLD))["status"] == "done"
    started, release = threading.Event(), threading.Event()
    real = service.ingest_uploads

    def held_ingest(kb: str, uploads: list, **progress: object) -> list:
        started.set()
        release.wait(60)
        return real(kb, uploads, **progress)

    service.ingest_uploads = held_ingest
    try:
        sent = api(server, "POST", "/v1/kbs/slow/documents",
                   files={"files": ("b.md", NEW.encode(), "text/markdown")})
        assert sent.status_code == 202 and started.wait(30)
        for path in ("/v1/kbs/slow", "/v1/kbs/slow/documents/a.md"):
            clock = time.monotonic()
            response = api(server, "DELETE", path)
            assert response.status_code == 409 and response.json()["error"]["code"] == "kb_busy"
            assert time.monotonic() - clock < 2
        clock = time.monotonic()
        assert documents(server, "hr", server.hr_key) == ["员工手册.md"]  # another tenant
        assert chat(server, "hr", "年假有几天？").status_code == 200
        assert time.monotonic() - clock < 30
    finally:
        release.set()
        service.ingest_uploads = real
    deadline = time.monotonic() + 60
    while api(server, "GET", f"/v1/kbs/slow/jobs/{sent.json()['id']}").json()["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert documents(server, "slow") == ["a.md", "b.md"]
    assert api(server, "DELETE", "/v1/kbs/slow/documents/a.md").status_code == 200
    assert api(server, "DELETE", "/v1/kbs/slow").status_code == 200


def test_a_writer_in_another_process_makes_deletes_409_at_once(server: Server) -> None:
    assert api(server, "POST", "/v1/kbs", json={"name": "locked"}).status_code == 201
    assert upload(server, "locked", ("b.md", NEW))["status"] == "done"
    lock = server.home / "kb" / "locked" / ".lock"
    holder = subprocess.Popen(  # holds the writer lock as a CLI ingest would
        [sys.executable, "-c", ("import fcntl, sys\nh = open(sys.argv[1], 'a+b')\n"
                                "fcntl.flock(h, fcntl.LOCK_EX)\nprint('held', flush=True)\n"
                                "sys.stdin.read()\n"), str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for path in ("/v1/kbs/locked/documents/b.md", "/v1/kbs/locked"):
            clock = time.monotonic()
            response = api(server, "DELETE", path)
            assert response.status_code == 409, response.text
            assert time.monotonic() - clock < 2
        assert documents(server, "locked") == ["b.md"]
    finally:
        holder.kill()
        holder.wait(10)
    assert api(server, "DELETE", "/v1/kbs/locked").status_code == 200


# ------------------------------------------------------------------ item 7: smaller ones


def test_same_name_twice_in_one_upload_is_refused_whole(server: Server) -> None:
    response = api(server, "POST", "/v1/kbs/hr/documents", files=[
        ("files", ("dir1/report.md", b"# a\n\none\n", "text/markdown")),
        ("files", ("dir2/report.md", b"# b\n\ntwo\n", "text/markdown"))])
    assert response.status_code == 422 and response.json()["error"]["code"] == "duplicate_name"
    assert documents(server, "hr") == ["员工手册.md"]


def test_unknown_routes_answer_in_openai_error_shape(server: Server) -> None:
    response = api(server, "GET", "/v1/no-such-route")
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "Invalid URL (GET /v1/no-such-route)",
                                         "type": "invalid_request_error", "param": None,
                                         "code": "unknown_url"}}
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin_key,
                      max_retries=0).embeddings.create(model="plain", input="x")
    assert httpx.get(server.url + "/nowhere").json()["error"]["type"] == "invalid_request_error"
    assert api(server, "PUT", "/v1/kbs").json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("error", ["KnowledgeBaseError", "RuntimeError"])
def test_a_500_names_no_server_path(server: Server, error: str) -> None:
    """A failure whose message holds server paths (as the stale-base 500 did): the answer keeps
    the file name, in OpenAI's shape, and no folder; an unexpected error says only its type."""
    from kbqa import errors

    service = server.state.service
    folder = server.home / "kb" / "hr"
    kind = getattr(errors, error, None) or RuntimeError

    def failing(*args: object, **kwargs: object) -> object:
        raise kind(f"knowledge base 'hr': index file {folder}/index.1.faiss is missing "
                   f"(see {folder}/kb.sqlite3)")

    service.retriever = failing
    try:
        response = chat(server, "hr")
    finally:
        del service.retriever
    assert response.status_code == 500, response.text
    body = response.json()["error"]
    assert body["type"] == "server_error"
    assert str(server.home) not in response.text and "/kb/" not in response.text
    if error == "KnowledgeBaseError":
        assert body["message"] == ("knowledge base 'hr': index file index.1.faiss is missing "
                                   "(see kb.sqlite3)")
    else:
        assert body["message"] == "the server failed unexpectedly (RuntimeError); see its log"


def test_a_client_leaving_a_non_streamed_answer_frees_its_place(server: Server) -> None:
    """The model may not end by itself here (min_new_tokens = max_new_tokens), and it writes
    tokens without pauses: only noticing that the client left can stop it early."""
    queue = server.state.queue
    model = server.state.service.variant_model.base_model
    outputs: list[int] = []
    real = model.generate

    def spy(*args: object, **kwargs: object) -> object:
        kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
        output = real(*args, **kwargs)
        outputs.append(output.shape[1] - kwargs["input_ids"].shape[1])
        return output

    model.generate = spy
    try:
        body = {"model": "plain", "max_tokens": 2000,
                "messages": [{"role": "user", "content": "Count from 1 to 1000: 1, 2, 3,"}]}
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(server.url + "/v1/chat/completions", json=body, timeout=1.5,
                       headers={"Authorization": f"Bearer {server.hr_key}"})
        deadline = time.monotonic() + 5
        while (queue.stats()["in_queue"] or not outputs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queue.stats()["in_queue"] == 0 and outputs  # freed within seconds
        assert outputs[0] < 2000  # stopped early, not generated to the end
    finally:
        del model.generate
    assert json.loads(chat(server, "hr", "年假有几天？").text)["choices"]


def test_a_client_that_left_is_noticed_while_tokens_keep_coming() -> None:
    """A model that writes a token every 10 ms never pauses long enough for a poll to time out:
    the check for a departed client runs on a clock, so the answer stops within a poll or two."""
    import asyncio
    import queue as queues

    from kbqa.server import chat as chat_module

    out: queues.SimpleQueue = queues.SimpleQueue()
    cancelled = threading.Event()

    def model() -> None:  # writes until told to stop, as the generation thread does
        while not cancelled.is_set():
            out.put("字")
            time.sleep(0.01)

    class GoneRequest:
        async def is_disconnected(self) -> bool:
            return True

    writer = threading.Thread(target=model, daemon=True)
    writer.start()
    start = time.monotonic()
    try:
        with pytest.raises(chat_module.ClientGone):
            asyncio.run(asyncio.wait_for(chat_module._collect(GoneRequest(), out, cancelled), 10))
    finally:
        cancelled.set()
    assert time.monotonic() - start < 3 * chat_module.DISCONNECT_POLL_S + 1
    assert cancelled.is_set()
