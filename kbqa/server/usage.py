"""Token usage and finish reason of one request's generation, as OpenAI's API reports them.

Counts are measured, never estimated, and reach the server through a LangChain callback on the
LLM's `generation_info`. For the local model they are the ids `generate()` itself read and
wrote: the whole rendered prompt (chat template, passages, history, question, after the
`max_input_tokens` cut) and every generated token, the end-of-sequence token and the tokens of
a stop string included. For a remote model they are what the upstream server reported; when it
reports none the usage is unknown and left out rather than guessed. A refused question (no passage
found) never reaches the model: zero tokens, finish reason "stop". The meter also keeps the
model's answerability probability when its probe measured one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult


@dataclass
class Meter:
    """Filled in by the backend while one request generates; read once the answer is complete."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    known: bool = True  # False once a model call's token counts are unknown
    # the model's probability that the passages hold the answer (kbqa.llm.answerability)
    answerability: float | None = None

    def record(self, prompt_tokens: int | None, completion_tokens: int | None,
               finish_reason: str | None, answerability: float | None = None) -> None:
        if answerability is not None:
            self.answerability = answerability
        if prompt_tokens is None or completion_tokens is None:
            self.known = False
        else:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
        self.finish_reason = finish_reason or "stop"

    def usage(self) -> dict[str, int] | None:
        """OpenAI's `usage` object, or None when a count is unknown."""
        if not self.known:
            return None
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


class UsageRecorder(BaseCallbackHandler):
    """Records an LLM run's `finish_reason` and `token_usage` from its generation_info.

    `LocalLLM` reports the ids `generate()` read and wrote; `RemoteLLM` what its upstream said.
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        generations = response.generations[0] if response.generations else []
        info = (generations[0].generation_info if generations else None) or {}
        usage = info.get("token_usage") or {}
        self.meter.record(usage.get("prompt_tokens"), usage.get("completion_tokens"),
                          info.get("finish_reason"), info.get("answerability"))
