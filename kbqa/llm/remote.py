"""`RemoteLLM`: the LangChain `LLM` for an OpenAI-compatible server (vLLM, kbqa serve, ...).

Scale-out for generation: the chain, the prompt and the retriever stay as they are; only the LLM
object changes. Chosen by the `llm` setting ``openai:BASE_URL#MODEL`` (for example
``openai:http://gpu-box:8000/v1#qwen2.5-7b-instruct``); the key comes from `llm_api_key`.
The rendered prompt is sent as one user message, like `LocalLLM` wraps it in its chat template.
vLLM serves each LoRA adapter under its own model name, so a variant there is just another MODEL.
A stream asks for the upstream's token usage (`stream_options.include_usage`) and ends with an empty
chunk whose `generation_info` holds what the upstream reported: `finish_reason` and `token_usage`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import GenerationChunk
from pydantic import Field

from kbqa.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from kbqa.config import Settings

REMOTE_PREFIX = "openai:"


def is_remote(spec: str) -> bool:
    return spec.startswith(REMOTE_PREFIX)


def parse_remote(spec: str) -> tuple[str, str]:
    """'openai:http://h:8000/v1#name' → ('http://h:8000/v1', 'name'); ConfigError if malformed."""
    base, _, model = spec[len(REMOTE_PREFIX):].partition("#")
    if not base.startswith(("http://", "https://")) or not model:
        raise ConfigError(f"llm {spec!r}: expected 'openai:http(s)://HOST:PORT/v1#MODEL'")
    return base.rstrip("/"), model


class RemoteLLM(LLM):
    """Greedy by default, like LocalLLM; the same generation fields, so callers need not care."""

    base_url: str
    model_name: str
    api_key: str | None = Field(None, repr=False)
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = Field(default_factory=list)
    timeout_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteLLM:
        base, model = parse_remote(settings.llm.model)
        return cls(base_url=base, model_name=model, api_key=settings.llm.api_key,
                   max_new_tokens=settings.llm.max_new_tokens, temperature=settings.llm.temperature,
                   top_p=settings.llm.top_p)

    @property
    def _llm_type(self) -> str:
        return "kbqa-remote-openai"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model_name": self.model_name,
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p}

    def _request(self, prompt: str, stop: list[str] | None, stream: bool,
                 **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": kwargs.get("max_new_tokens", self.max_new_tokens),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        stops = [*self.stop, *(stop or [])]
        if stops:
            body["stop"] = stops
        return body

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        try:
            response = httpx.post(f"{self.base_url}/chat/completions", headers=self._headers(),
                                  json=self._request(prompt, stop, False, **kwargs),
                                  timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise ModelError(f"remote LLM {self.base_url} unreachable: {exc}") from exc
        _raise_for_status(response)
        return (response.json()["choices"][0]["message"].get("content") or "").strip()

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[GenerationChunk]:
        body = self._request(prompt, stop, True, **kwargs)
        try:
            with httpx.stream("POST", f"{self.base_url}/chat/completions", json=body,
                              headers=self._headers(), timeout=self.timeout_s) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                info: dict[str, Any] = {}
                for event in _sse_events(response.iter_lines()):
                    if event.get("error"):  # the status line was 200: errors come as events
                        error = event["error"]
                        message = error.get("message") if isinstance(error, dict) else error
                        raise ModelError(f"remote LLM failed mid-stream: {message}")
                    if event.get("usage"):
                        info["token_usage"] = event["usage"]
                    choices = event.get("choices") or []
                    if not choices:
                        continue
                    if choices[0].get("finish_reason"):
                        info["finish_reason"] = choices[0]["finish_reason"]
                    delta = (choices[0].get("delta") or {}).get("content")
                    if delta:
                        if run_manager:
                            run_manager.on_llm_new_token(delta)
                        yield GenerationChunk(text=delta)
                if info:
                    yield GenerationChunk(text="", generation_info=info)
        except httpx.HTTPError as exc:
            raise ModelError(f"remote LLM {self.base_url} failed mid-stream: {exc}") from exc


def _sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON events of an OpenAI chat-completion SSE stream, up to `data: [DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[len("data:"):].strip()
        if payload == "[DONE]":
            return
        yield json.loads(payload)


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    raise ModelError(f"remote LLM answered HTTP {response.status_code}: {message}")
