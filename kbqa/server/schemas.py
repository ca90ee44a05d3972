"""Request bodies and response objects of the HTTP API, in OpenAI's shapes where one exists.

Requests are validated by pydantic (a malformed body is a 422). Unknown request fields are ignored,
as OpenAI clients send options this server has no use for. Responses are plain dicts in OpenAI's
`chat.completion` / `chat.completion.chunk` shapes, with kbqa's extra fields (`sources`,
`grounding`, `answerability`: the model's probability that the passages hold the answer, where its
reader has a probe), which the official clients keep (`response.model_extra["sources"]`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kbqa.qa.grounding import Grounding


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. `kb` selects a knowledge base; without it the model answers
    the last user message directly (which makes this server a backend for `RemoteLLM`)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    stop: str | list[str] | None = None
    kb: str | None = Field(None, min_length=1)
    top_k: int | None = Field(None, ge=1, le=50)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or not all(stops)):
            raise ValueError("stop: at most 4 non-empty strings")
        return stops

    @model_validator(mode="after")
    def _ends_with_question(self) -> "ChatRequest":
        if self.messages[-1].role != "user" or not self.messages[-1].text.strip():
            raise ValueError("the last message must be a non-empty user message")
        return self

    @property
    def question(self) -> str:
        return self.messages[-1].text.strip()

    @property
    def history(self) -> list[tuple[str, str]]:
        """(user, assistant) pairs before the question; system messages are not used."""
        turns = [m for m in self.messages[:-1] if m.role in ("user", "assistant")]
        return [(q.text, a.text) for q, a in zip(turns, turns[1:])
                if q.role == "user" and a.role == "assistant"]

    @property
    def new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CreateKb(BaseModel):
    name: str = Field(min_length=1, max_length=100)


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def grounding_view(grounded: Grounding | None) -> dict[str, Any] | None:
    """kbqa's extension field: what the grounding check did to the model's draft, if it ran."""
    if grounded is None or grounded.action == "unchecked":
        return None
    view: dict[str, Any] = {"action": grounded.action, "content": grounded.text}
    if grounded.action != "kept":
        view["draft"] = grounded.draft.strip()
    if grounded.support is not None and grounded.support.passage is not None:
        view["source"] = grounded.support.passage + 1  # the [n] of `sources`
    return view


def completion(cid: str, model: str, text: str, sources: list[dict] | None, finish: str,
               usage: dict[str, int] | None, grounding: dict[str, Any] | None = None,
               answerability: float | None = None) -> dict[str, Any]:
    """A whole answer; `usage` is left out when the token counts are unknown."""
    body: dict[str, Any] = {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    if sources is not None:
        body["sources"] = sources
    if grounding is not None:
        body["grounding"] = grounding
    if answerability is not None:
        body["answerability"] = round(answerability, 4)
    return body


def chunk(cid: str, model: str, delta: dict[str, str], finish: str | None = None,
          sources: list[dict] | None = None, grounding: dict[str, Any] | None = None,
          answerability: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if sources is not None:
        body["sources"] = sources
    if grounding is not None:
        body["grounding"] = grounding
    if answerability is not None:
        body["answerability"] = round(answerability, 4)
    return body


def usage_chunk(cid: str, model: str, usage: dict[str, int]) -> dict[str, Any]:
    """The extra last chunk of a stream asked for with `stream_options.include_usage`."""
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [], "usage": usage}


def error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which its clients turn into typed exceptions."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
