"""RemoteLLM against a real OpenAI-compatible server on loopback: kbqa's own `kbqa serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from kbqa.chain import build_qa_chain
from kbqa.config import Settings, load_settings
from kbqa.errors import ConfigError, ModelError
from kbqa.remote_llm import RemoteLLM, parse_remote
from kbqa.server.app import create_app, running
from kbqa.server.backends import RemoteBackend

from tests.serve_support import Server, kbqa_server
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
    assert settings.variants == {"cmrc": [Path("adapters/x")]}
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
    assert response.choices[0].message.content == expected.strip()
    assert [s["document"] for s in response.model_extra["sources"]] == ["员工手册.md"]
