"""`kbqa serve` end to end: the official openai client against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kbqa.kb import folders
from kbqa.kb.store import KnowledgeBase
from kbqa.server import kbs
from kbqa.server.app import create_app, running

from tests.serve_support import Server, count, draft_of, kbqa_server, rendered
from tests.ui_support import QUESTION

FINANCE_SECRET = "青松七号"
YES_NO = "Reply with one word: yes or no. Is the sky blue?"  # the tiny model ends after one word


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llm_folder: Path) -> Iterator[Server]:
    with kbqa_server(tmp_path_factory.mktemp("serve-home"), tiny_llm_folder) as running:
        yield running


def client(server: Server, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key or server.hr_key, max_retries=0)


def ask(server: Server, key: str | None = None, **options):
    options.setdefault("model", "plain")
    options.setdefault("messages", [{"role": "user", "content": QUESTION}])
    return client(server, key).chat.completions.create(**options)


def api(server: Server, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or server.admin_key}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=120, **kwargs)


# ------------------------------------------------------------------ OpenAI-compatible part


def test_models_lists_plain_and_configured_variants(server: Server) -> None:
    assert [m.id for m in client(server).models.list()] == ["plain", "donor"]


def test_chat_answers_from_the_kb_with_sources(server: Server) -> None:
    response = ask(server, extra_body={"kb": "hr"})
    answer = response.choices[0].message.content
    assert answer and response.choices[0].finish_reason == "length"  # max_new_tokens is 8 here
    sources = response.model_extra["sources"]
    assert [s["document"] for s in sources] == ["员工手册.md"]
    assert "带薪年假" in sources[0]["snippet"] and sources[0]["heading"] == "年假制度"
    assert str(server.home) not in response.model_dump_json()  # no server path leaks


def test_stream_carries_sources_first_and_the_same_answer(server: Server) -> None:
    whole = ask(server, extra_body={"kb": "hr"})
    chunks = list(ask(server, extra_body={"kb": "hr"}, stream=True,
                      stream_options={"include_usage": True}))
    assert [s["document"] for s in chunks[0].model_extra["sources"]] == ["员工手册.md"]
    *answer, last = chunks  # include_usage: one more chunk, no choices, the usage
    assert last.choices == [] and last.usage == whole.usage
    assert all(c.usage is None for c in answer)
    assert answer[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    deltas = [c.choices[0].delta.content or "" for c in answer]
    assert sum(1 for d in deltas if d) >= 2  # streamed in pieces, not one blob
    grounding = whole.model_extra["grounding"]  # the tiny model's draft is not in the passages
    assert "".join(deltas).strip() == grounding["draft"]
    assert answer[-1].model_extra["grounding"] == grounding


def test_a_draft_the_passages_do_not_support_is_replaced_or_refused(server: Server) -> None:
    """The server gives the answer the web app and CLI give: the grounding check's, not the draft."""
    response = ask(server, extra_body={"kb": "hr"})
    grounding = response.model_extra["grounding"]
    answer = response.choices[0].message.content
    assert grounding["action"] in ("span", "refused") and grounding["content"] == answer
    assert grounding["draft"] and grounding["draft"] != answer
    if grounding["action"] == "span":  # the span comes from the passage it cites
        passage = response.model_extra["sources"][grounding["source"] - 1]
        assert answer.replace(" ", "") in passage["snippet"].replace(" ", "")
    else:
        assert "无法回答" in answer


@contextmanager
def generate_calls(server: Server) -> Iterator[list[tuple[Any, Any]]]:
    """(input_ids, output ids) of every generate() of the served model (adapters or not)."""
    model = server.state.service.variant_model.base_model
    calls: list[tuple[Any, Any]] = []
    real = model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        output = real(*args, **kwargs)
        calls.append((kwargs["input_ids"].clone(), output.clone()))
        return output

    model.generate = spy
    try:
        yield calls
    finally:
        del model.generate


def test_usage_counts_the_whole_prompt_and_every_generated_token(server: Server,
                                                                 tiny_llm_folder: Path) -> None:
    from transformers import AutoTokenizer

    # the model's own tokenizer, loaded here from its folder (not the server's instance)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_folder, local_files_only=True)

    def tokens(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    history = [("年假怎么申请？", "请向人事部提交申请。")]
    messages = [{"role": "user", "content": history[0][0]},
                {"role": "assistant", "content": history[0][1]},
                {"role": "user", "content": QUESTION}]
    with generate_calls(server) as calls:
        response = ask(server, messages=messages, extra_body={"kb": "hr"}, max_tokens=5)
    usage, choice = response.usage, response.choices[0]
    [(input_ids, output)] = calls  # one model call
    # prompt_tokens is the length of what the model read, and what it read holds the passage
    # (as in the test's document), the earlier turn and the question, in the chat format
    assert usage.prompt_tokens == input_ids.shape[1]
    read = tokenizer.decode(input_ids[0])
    assert len(tokens(read)) == usage.prompt_tokens
    passage = "入职满一年的员工每年享有十天带薪年假。在公司工作满十年的员工，每年享有十五天带薪年假。"
    assert passage in read and "差旅费用" not in read  # the retrieved section only
    assert read.index(passage) < read.index(history[0][0]) < read.index(history[0][1]) \
        < read.rindex(QUESTION)
    assert read.startswith("<|im_start|>") and read.endswith("<|im_start|>assistant\n")
    assert usage.prompt_tokens > sum(len(tokens(t)) for t in (passage, *history[0], QUESTION))
    assert [s["document"] for s in response.model_extra["sources"]] == ["员工手册.md"]
    # max_tokens=5 cut the answer: five tokens generated, counted, and all of them returned
    generated = output[0, input_ids.shape[1]:]
    assert choice.finish_reason == "length"
    draft = draft_of(response)  # what the model generated, before the grounding check
    assert usage.completion_tokens == 5 == len(generated) == len(tokens(draft))
    assert tokenizer.decode(generated, skip_special_tokens=True).strip() == draft
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_an_answer_that_ends_by_itself_finishes_with_stop(server: Server) -> None:
    question = [{"role": "user", "content": YES_NO}]
    response = ask(server, messages=question, max_tokens=50)
    text = response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == count(server, rendered(server, YES_NO))
    assert response.usage.completion_tokens == count(server, text) + 1  # + end of sequence
    chunks = list(ask(server, messages=question, max_tokens=50, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices and c.usage is None for c in chunks)  # no usage unless asked for
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == text


def test_max_tokens_and_stop_are_honoured(server: Server) -> None:
    full = draft_of(ask(server, extra_body={"kb": "hr"}))
    one = ask(server, extra_body={"kb": "hr"}, max_tokens=1)
    assert one.choices[0].finish_reason == "length" and one.usage.completion_tokens == 1
    assert count(server, draft_of(one)) <= 1 < count(server, full)
    stop = full[len(full) // 2:len(full) // 2 + 2]
    cut = ask(server, extra_body={"kb": "hr"}, stop=[stop])
    assert draft_of(cut) == full[:full.find(stop)].strip()
    assert cut.choices[0].finish_reason == "stop"  # a stop string, though within max_tokens
    cut_stream = list(ask(server, extra_body={"kb": "hr"}, stop=[stop], stream=True))
    assert cut_stream[-1].choices[0].finish_reason == "stop"


def test_adapter_variant_and_direct_mode(server: Server) -> None:
    donor = ask(server, model="donor", extra_body={"kb": "hr"})
    assert donor.model == "donor" and donor.model_extra["sources"]
    direct = ask(server, messages=[{"role": "user", "content": "Hello"}])
    assert direct.choices[0].message.content and "sources" not in direct.model_extra


def test_question_outside_the_kb_is_refused_without_sources(server: Server) -> None:
    response = ask(server, messages=[{"role": "user", "content": "火星的卫星叫什么名字？"}],
                   extra_body={"kb": "hr"})
    assert response.model_extra["sources"] == []
    assert response.choices[0].message.content == "根据已知信息无法回答该问题"
    assert response.choices[0].finish_reason == "stop"  # the model was never called
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (0, 0)


# ------------------------------------------------------------------ access control and errors


def test_wrong_or_missing_key_is_401(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        ask(server, key="kbqa-not-a-real-key", extra_body={"kb": "hr"})
    response = httpx.get(server.url + "/v1/models")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_key_never_reaches_a_kb_it_is_not_allowed(server: Server) -> None:
    for kb in ("finance", "no-such-kb"):  # existing or not: the same 403, so nothing is learnt
        with pytest.raises(openai.PermissionDeniedError) as caught:
            ask(server, messages=[{"role": "user", "content": "季度预算审批口令是什么？"}],
                extra_body={"kb": kb})
        assert FINANCE_SECRET not in str(caught.value.body)
    names = [kb["name"] for kb in api(server, "GET", "/v1/kbs", server.hr_key).json()["data"]]
    assert names == ["hr"]
    assert api(server, "GET", "/v1/kbs/finance/documents", server.hr_key).status_code == 403
    assert api(server, "DELETE", "/v1/kbs/finance", server.hr_key).status_code == 403
    assert api(server, "POST", "/v1/kbs", server.hr_key, json={"name": "x"}).status_code == 403
    # its own KB never cites the other one's passages
    response = ask(server, messages=[{"role": "user", "content": "财务部的季度预算审批口令是什么？"}],
                   extra_body={"kb": "hr"})
    assert FINANCE_SECRET not in response.model_dump_json()


def test_unknown_kb_or_model_is_404(server: Server) -> None:
    with pytest.raises(openai.NotFoundError):
        ask(server, key=server.admin_key, extra_body={"kb": "no-such-kb"})
    with pytest.raises(openai.NotFoundError) as caught:
        ask(server, model="gpt-4o", extra_body={"kb": "hr"})
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("options", [
    {"messages": []},
    {"messages": [{"role": "assistant", "content": "hi"}]},
    {"temperature": 5},
    {"stop": ["a", "b", "c", "d", "e"]},
])
def test_malformed_chat_body_is_422(server: Server, options: dict) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        ask(server, extra_body={"kb": "hr"}, **options)


def test_uploads_too_large_or_of_bad_type_are_refused(server: Server) -> None:
    big = {"files": ("big.txt", b"x" * (1024 * 1024 + 100 * 1024), "text/plain")}
    response = api(server, "POST", "/v1/kbs/hr/documents", files=big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    for name in ("tool.exe", ".env.txt", "../"):
        response = api(server, "POST", "/v1/kbs/hr/documents",
                       files={"files": (name, b"data", "application/octet-stream")})
        assert response.status_code == 422, name
    assert api(server, "POST", "/v1/kbs/hr/documents", data={"x": "1"}).status_code == 422
    documents = api(server, "GET", "/v1/kbs/hr/documents").json()["data"]
    assert [d["name"] for d in documents] == ["员工手册.md"]  # nothing was stored


def test_full_queue_answers_503_with_retry_after(server: Server) -> None:
    queue = server.state.queue
    tickets = [queue.admit() for _ in range(queue.capacity)]
    try:
        response = api(server, "POST", "/v1/chat/completions", server.hr_key,
                       json={"model": "plain", "kb": "hr",
                             "messages": [{"role": "user", "content": QUESTION}]})
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
    finally:
        for ticket in tickets:
            ticket.release()
    assert ask(server, extra_body={"kb": "hr"}).choices[0].message.content


def test_a_client_leaving_mid_stream_frees_its_queue_place(server: Server) -> None:
    body = {"model": "plain", "kb": "hr", "stream": True, "max_tokens": 200,
            "messages": [{"role": "user", "content": QUESTION}]}
    model = server.state.service.variant_model.base_model
    steps: list[int] = []  # forward passes: one for the prompt, one per token generated
    hook = model.register_forward_hook(lambda *_: steps.append(1))
    try:
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {server.hr_key}"}) as response:
            lines = response.iter_lines()
            assert '"sources"' in next(lines) and server.state.queue.stats()["in_queue"] == 1
            assert '"content"' in next(line for line in lines if line)  # a token has come
        deadline = time.monotonic() + 60
        while server.state.queue.stats()["in_queue"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.state.queue.stats()["in_queue"] == 0
    finally:
        hook.remove()
    assert len(steps) < 100, len(steps)  # stopped, not run on to its 200 tokens
    assert ask(server, extra_body={"kb": "hr"}).choices[0].message.content


def test_health_needs_no_key_and_names_no_kb(server: Server) -> None:
    response = httpx.get(server.url + "/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert "hr" not in json.dumps(response.json()) and "finance" not in response.text


# ------------------------------------------------------------------ knowledge-base endpoints


def _wait(server: Server, kb: str, job_id: str, key: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = api(server, "GET", f"/v1/kbs/{kb}/jobs/{job_id}", key).json()
        if job["status"] in ("done", "failed", "interrupted"):
            return job
        time.sleep(0.2)
    raise AssertionError("ingestion job did not finish")


def test_upload_ingest_ask_and_remove_a_document(server: Server) -> None:
    text = "# 差旅\n\n出差住宿标准为每晚五百元，超出部分由员工自行承担。\n".encode()
    response = api(server, "POST", "/v1/kbs/hr/documents", server.hr_key,
                   files={"files": ("../../差旅规定.md", text, "text/markdown")})
    assert response.status_code == 202
    job = _wait(server, "hr", response.json()["id"], server.hr_key)
    assert job["status"] == "done" and job["outcomes"][0]["name"] == "差旅规定.md"
    assert api(server, "GET", f"/v1/kbs/finance/jobs/{job['id']}").status_code == 404
    names = {d["name"] for d in api(server, "GET", "/v1/kbs/hr/documents", server.hr_key)
             .json()["data"]}
    assert names == {"员工手册.md", "差旅规定.md"}

    answer = ask(server, messages=[{"role": "user", "content": "出差住宿标准是每晚多少元？"}],
                 extra_body={"kb": "hr"})
    assert "差旅规定.md" in [s["document"] for s in answer.model_extra["sources"]]

    removed = api(server, "DELETE", "/v1/kbs/hr/documents/差旅规定.md", server.hr_key)
    assert removed.status_code == 200 and removed.json()["chunks"] >= 1
    assert api(server, "DELETE", "/v1/kbs/hr/documents/差旅规定.md",
               server.hr_key).status_code == 404
    names = [d["name"] for d in api(server, "GET", "/v1/kbs/hr/documents").json()["data"]]
    assert names == ["员工手册.md"]


def test_sources_keep_a_tables_header_and_the_row_asked_about(server: Server) -> None:
    sheet = "型号,最大吸力,续航\n" + "".join(f"星河X{n},{n}000Pa,{n * 10}分钟\n" for n in range(1, 9))
    assert api(server, "POST", "/v1/kbs", json={"name": "products"}).status_code == 201
    try:
        response = api(server, "POST", "/v1/kbs/products/documents",
                       files={"files": ("型号参数.csv", sheet.encode(), "text/csv")})
        assert response.status_code == 202
        assert _wait(server, "products", response.json()["id"], server.admin_key)["status"] == "done"
        for stream in (False, True):
            answer = ask(server, server.admin_key, stream=stream, extra_body={"kb": "products"},
                         messages=[{"role": "user", "content": "星河X3的最大吸力是多少？"}])
            # read to its end (a stream left open keeps the server generating at shutdown)
            chunks = [*answer] if stream else [answer]  # a stream carries them first
            first = chunks[0]
            [source] = first.model_extra["sources"]
            assert source["document"] == "型号参数.csv"
            # the table's lines, newlines kept: header, separator, the row asked about, "more"
            assert source["snippet"].split("\n") == [
                "| 型号 | 最大吸力 | 续航 |", "| --- | --- | --- |", "| 星河X3 | 3000Pa | 30分钟 |",
                "| … | … | … |"]
    finally:
        assert api(server, "DELETE", "/v1/kbs/products").status_code == 200


def test_create_and_delete_a_kb(server: Server) -> None:
    created = api(server, "POST", "/v1/kbs", json={"name": "scratch"})
    assert created.status_code == 201
    assert api(server, "POST", "/v1/kbs", json={"name": "scratch"}).status_code == 409
    assert api(server, "POST", "/v1/kbs", json={"name": "../etc"}).status_code == 422
    assert api(server, "POST", "/v1/kbs", json={}).status_code == 422
    assert "scratch" in [kb["name"] for kb in api(server, "GET", "/v1/kbs").json()["data"]]
    assert api(server, "DELETE", "/v1/kbs/scratch").status_code == 200
    assert "scratch" not in [kb["name"] for kb in api(server, "GET", "/v1/kbs").json()["data"]]
    assert api(server, "DELETE", "/v1/kbs/scratch").status_code == 404


def test_a_running_job_reports_its_file_and_the_pages_of_a_scan(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Polls of a job that ingests a note and then a three-page scan see the scan's pages go by;
    each page's OCR waits until a poll has seen the page before it, so no step is too quick to
    see on a fast machine (and a missing report fails in seconds, not at the job's end)."""
    from kbqa.ingest import pdf as pdf_module
    from tests.doc_samples import image_pdf, render_page

    pages = [render_page([f"第{n}页", "星河扫地机器人R2的保修期为三年。"], dpi=150, width_inches=4)
             for n in (1, 2, 3)]
    scan = image_pdf(tmp_path / "scan.pdf", pages, dpi=150).read_bytes()
    seen: list[dict] = []  # each new progress the polls saw, in order
    real = pdf_module.ocr_image

    def paced(image: Any, name: str) -> str:
        number = int(name.rsplit(" ", 1)[1])
        deadline = time.monotonic() + 15
        while number > 1 and time.monotonic() < deadline and not any(
                p["file"] == "scan.pdf" and p["page"] == number - 1 for p in seen):
            time.sleep(0.02)
        return real(image, name)

    monkeypatch.setattr(pdf_module, "ocr_image", paced)
    assert api(server, "POST", "/v1/kbs", json={"name": "scans"}).status_code == 201
    sent = api(server, "POST", "/v1/kbs/scans/documents",
               files=[("files", ("说明.md", "# 说明\n\n扫描件见下。\n".encode(), "text/markdown")),
                      ("files", ("scan.pdf", scan, "application/pdf"))])
    assert sent.status_code == 202 and sent.json()["progress"] is None
    deadline = time.monotonic() + 120
    while (job := api(server, "GET", f"/v1/kbs/scans/jobs/{sent.json()['id']}").json())[
            "status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        if job["progress"] and job["progress"] not in seen[-1:]:
            seen.append(job["progress"])
        time.sleep(0.02)
    assert job["status"] == "done" and job["progress"] is None
    assert [o["status"] for o in job["outcomes"]] == ["added", "added"]
    scan_steps = [p for p in seen if p["file"] == "scan.pdf"]
    assert {(p["files_done"], p["files"]) for p in scan_steps} == {(1, 2)}
    pages_seen = [p["page"] for p in scan_steps if p["page"] is not None]
    assert pages_seen[:2] == [1, 2] and pages_seen == sorted(pages_seen)
    assert {p["pages"] for p in scan_steps if p["page"] is not None} == {3}
    assert api(server, "DELETE", "/v1/kbs/scans").status_code == 200


def test_job_status_survives_a_server_restart(server: Server) -> None:
    """Stop the API and start it again over the same HOME: the finished job keeps its result."""
    def app():  # the server layer anew; the loaded models are reused to keep this test cheap
        return create_app(server.state.settings, service=server.state.service)

    assert api(server, "POST", "/v1/kbs", json={"name": "jobs-kb"}).status_code == 201
    text = "# 值班\n\n周末值班由行政部安排。\n".encode()
    with running(app()) as url:
        before = replace(server, url=url)
        sent = api(before, "POST", "/v1/kbs/jobs-kb/documents",
                   files={"files": ("值班.md", text, "text/markdown")}).json()
        finished = _wait(before, "jobs-kb", sent["id"], server.admin_key)
    assert finished["status"] == "done" and finished["outcomes"][0]["status"] == "added"
    with running(app()) as url:
        after = replace(server, url=url)
        path = f"/v1/kbs/jobs-kb/jobs/{sent['id']}"
        assert api(after, "GET", path).json() == finished
        listed = api(after, "GET", "/v1/kbs/jobs-kb/jobs").json()["data"]
        assert [job["id"] for job in listed] == [sent["id"]]
        for forbidden in (path, "/v1/kbs/jobs-kb/jobs"):  # a key not allowed the KB sees nothing
            response = api(after, "GET", forbidden, server.hr_key)
            assert response.status_code == 403 and sent["id"] not in response.text
        assert api(after, "GET", f"/v1/kbs/hr/jobs/{sent['id']}",
                   server.hr_key).status_code == 404
    assert api(server, "DELETE", "/v1/kbs/jobs-kb").status_code == 200


def test_a_base_deleted_by_another_process_mid_request_is_404(server: Server,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The request found the base and its document; then another process (the CLI) deleted the
    base before the removal ran: the answer is 404 kb_not_found, as if it had been gone first."""
    assert api(server, "POST", "/v1/kbs", json={"name": "racing"}).status_code == 201
    response = api(server, "POST", "/v1/kbs/racing/documents",
                   files={"files": ("停车.md", "停车位每月收费八十元。".encode(), "text/markdown")})
    assert _wait(server, "racing", response.json()["id"], server.admin_key)["status"] == "done"
    listed = kbs._documents

    def listed_then_deleted(store: KnowledgeBase) -> list:
        found = listed(store)
        folders.delete_kb(server.state.service.settings.kb_root, "racing")
        return found

    monkeypatch.setattr(kbs, "_documents", listed_then_deleted)
    removed = api(server, "DELETE", "/v1/kbs/racing/documents/停车.md")
    assert removed.status_code == 404, removed.text
    assert removed.json()["error"]["code"] == "kb_not_found"
    assert "racing" not in [kb["name"] for kb in api(server, "GET", "/v1/kbs").json()["data"]]
