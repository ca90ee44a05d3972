"""RemoteLLM against a real OpenAI-compatible server on loopback: kbqa's own `kbqa serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from kbqa.qa.chain import build_qa_chain
from kbqa.config import Settings, load_settings
from kbqa.errors import ConfigError, ModelError
from kbqa.llm.remote import RemoteLLM, parse_remote
from kbqa.server.app import create_app, running
from kbqa.server.backends import RemoteBackend
from kbqa.server.usage import Meter, UsageRecorder
from kbqa.service import KbqaService

from tests.serve_support import Server, count, draft_of, kbqa_server, qa_prompt, rendered
from tests.ui_support import QUESTION

PROMPT = "Name one colour of the sky."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llm_folder: Path) -> Iterator[Server]:
    with kbqa_server(tmp_path_factory.mktemp("remote-home"), tiny_llm_folder) as running_server:
        yield running_server


def remote(server: Server, model: str = "plain", key: str | None = None) -> RemoteLLM:
    settings = Settings(home=server.home, llm=f"openai:{server.url}/v1#{model}",
                        llm_api_key=key or server.hr_key, max_new_tokens=8)
    return RemoteLLM.from_settings(settings)


def local_answer(server: Server, prompt: str) -> str:
    with server.state.backend.activate("plain") as llm:
        return llm.invoke(prompt)


def test_remote_call_and_stream_equal_the_local_model(server: Server) -> None:
    llm = remote(server)
    expected = local_answer(server, PROMPT)
    assert expected and llm.invoke(PROMPT) == expected
    pieces = list(llm.stream(PROMPT))
    assert len(pieces) >= 2 and "".join(pieces).strip() == expected


def test_remote_stream_reports_the_upstream_usage_and_finish_reason(server: Server) -> None:
    meter = Meter()
    text = "".join(remote(server).stream(PROMPT, config={"callbacks": [UsageRecorder(meter)]}))
    direct = openai.OpenAI(base_url=server.url + "/v1", api_key=server.hr_key).chat.completions \
        .create(model="plain", messages=[{"role": "user", "content": PROMPT}], max_tokens=8)
    assert text.strip() == direct.choices[0].message.content
    assert meter.usage() == direct.usage.model_dump(exclude_none=True)
    assert meter.usage()["prompt_tokens"] == count(server, rendered(server, PROMPT))
    assert meter.finish_reason == direct.choices[0].finish_reason


def test_the_qa_chain_runs_unchanged_on_the_remote_llm(server: Server) -> None:
    retriever = server.state.service.retriever("hr")
    result = build_qa_chain(retriever, remote(server)).invoke({"question": QUESTION})
    assert [d.metadata["filename"] for d in result["docs"]] == ["员工手册.md"]
    with server.state.backend.activate("plain") as llm:
        expected = build_qa_chain(retriever, llm).invoke({"question": QUESTION})["answer"]
    assert result["answer"] == expected


def test_remote_errors_are_model_errors(server: Server) -> None:
    with pytest.raises(ModelError, match="401"):
        remote(server, key="kbqa-wrong").invoke(PROMPT)
    with pytest.raises(ModelError, match="404"):
        list(remote(server, model="nope").stream(PROMPT))
    unreachable = RemoteLLM(base_url="http://127.0.0.1:9/v1", model_name="x", timeout_s=2)
    with pytest.raises(ModelError, match="unreachable"):
        unreachable.invoke(PROMPT)


def test_spec_parsing_and_settings() -> None:
    assert parse_remote("openai:http://gpu:8000/v1/#qwen") == ("http://gpu:8000/v1", "qwen")
    for bad in ("openai:gpu:8000#qwen", "openai:http://gpu:8000/v1", "openai:#x"):
        with pytest.raises(ConfigError):
            parse_remote(bad)
    settings = load_settings(environ={"KBQA_LLM": "openai:http://h:1/v1#m",
                                      "KBQA_LLM_API_KEY": "secret",
                                      "KBQA_VARIANTS": '{"cmrc": ["adapters/x"]}'})
    llm = RemoteLLM.from_settings(settings)
    assert (llm.base_url, llm.model_name, llm.api_key) == ("http://h:1/v1", "m", "secret")
    assert settings.server.variants == {"cmrc": [Path("adapters/x")]}
    with pytest.raises(ConfigError, match="JSON"):
        load_settings(environ={"KBQA_VARIANTS": "cmrc=adapters/x"})


def test_kbqa_serve_can_front_a_remote_backend(server: Server, tmp_path: Path) -> None:
    """Scale-out: a second kbqa serve whose LLM is the first server (as it would be vLLM)."""
    settings = Settings(home=server.home, llm=f"openai:{server.url}/v1#plain",
                        llm_api_key=server.hr_key, max_new_tokens=8)
    front = create_app(settings)
    assert isinstance(front.state.kbqa.backend, RemoteBackend)
    with running(front) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=server.hr_key, max_retries=0)
        assert [m.id for m in client.models.list()] == ["plain"]
        response = client.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": QUESTION}], extra_body={"kb": "hr"})
    with server.state.backend.activate("plain") as llm:
        expected = build_qa_chain(server.state.service.retriever("hr"), llm).invoke(
            {"question": QUESTION})["answer"]
    # the front checks the answer against the passages; the model's own words are its draft
    assert draft_of(response) == expected.strip()
    assert [s["document"] for s in response.model_extra["sources"]] == ["员工手册.md"]
    # the upstream counted the prompt the front rendered, wrapped in its own chat template
    sent = rendered(server, qa_prompt(server, QUESTION))
    assert response.usage.prompt_tokens == count(server, sent)
    assert (response.choices[0].finish_reason, response.usage.completion_tokens) == ("length", 8)


def upstream_without_usage(requests: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-compatible server that reports no token usage (some do not); model 'broken'
    fails mid-stream. Records the request bodies it is sent."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def complete(body: dict[str, Any]) -> StreamingResponse:
        requests.append(body)
        events: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "delta": {"content": "蓝色"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}]
        if body["model"] == "broken":
            events[1] = {"error": {"message": "out of memory", "type": "server_error"}}
        lines = [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
        return StreamingResponse(iter(lines), media_type="text/event-stream")

    return app


def test_usage_is_left_out_when_the_upstream_reports_none(server: Server) -> None:
    requests: list[dict[str, Any]] = []
    with running(upstream_without_usage(requests)) as upstream:
        settings = Settings(home=server.home, llm=f"openai:{upstream}/v1#fake")
        service = KbqaService(settings, embeddings=server.state.service.embeddings)
        with running(create_app(settings, service)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key=server.hr_key, max_retries=0)
            question = [{"role": "user", "content": PROMPT}]
            response = client.chat.completions.create(model="fake", messages=question)
            chunks = list(client.chat.completions.create(
                model="fake", messages=question, stream=True,
                stream_options={"include_usage": True}))
        with pytest.raises(ModelError, match="mid-stream: out of memory"):
            list(RemoteLLM(base_url=upstream + "/v1", model_name="broken").stream(PROMPT))
    assert requests[0]["stream_options"] == {"include_usage": True}
    assert response.choices[0].message.content == "蓝色" and response.usage is None
    assert response.choices[0].finish_reason == "length"  # the upstream's, passed on
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices and c.usage is None for c in chunks)  # no usage chunk: nothing invented


def test_a_settings_change_reaches_a_remote_llm_without_fields_it_lacks(tmp_path: Path):
    settings = Settings(home=tmp_path, llm="openai:http://127.0.0.1:9/v1#m")
    service = KbqaService(settings, llm=RemoteLLM.from_settings(settings))
    service.update_settings({"temperature": 0.4, "repetition_penalty": 1.3, "max_new_tokens": 64})
    llm = service.llm
    assert isinstance(llm, RemoteLLM) and (llm.temperature, llm.max_new_tokens) == (0.4, 64)
    assert "repetition_penalty" not in RemoteLLM.model_fields  # nothing to set, nothing raised
