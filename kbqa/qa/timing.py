"""Where an answer's time goes, taken from LangChain's own callbacks.

`StageTimer` is a callback handler: passed in a chain's config it sees the retriever start
and end, the LLM start, the first streamed token and the LLM end (with the token usage
that `LocalLLM` and `RemoteLLM` report). Any retriever and LLM fit; nothing is patched.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult


class StageTimer(BaseCallbackHandler):
    """Seconds per stage of one chain run (retrieve, prompt, prefill, decode), and token usage.

    prompt  = from the retriever's end to the LLM's start (formatting the template);
    prefill = from the LLM's start to its first token (tokenising + the prompt's forward pass);
    decode  = from the first token to the LLM's end.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.marks: dict[str, float] = {}
        self.usage: dict[str, int] = {}
        self.finish_reason: str | None = None
        self.answerability: float | None = None  # the model's probe (kbqa.llm.answerability)
        self._llm_done = threading.Event()

    def _mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter())

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        self._mark("retriever_start")

    def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
        self._mark("retriever_end")

    def on_llm_start(self, serialized: Any, prompts: list[str], **kwargs: Any) -> None:
        self._mark("llm_start")

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        if token:
            self._mark("first_token")

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self._mark("llm_end")
        info = (response.generations[0][0].generation_info or {}) if response.generations else {}
        self.usage = dict(info.get("token_usage") or {})
        self.finish_reason = info.get("finish_reason")
        self.answerability = info.get("answerability")
        self._llm_done.set()

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self._llm_done.set()

    def wait_for_llm(self, timeout: float = 5.0) -> None:
        """Wait for the LLM's end callback when an LLM ran: LCEL may deliver it on a worker
        thread a moment after the last chunk reached the consumer."""
        if "llm_start" in self.marks:
            self._llm_done.wait(timeout)

    def stages(self) -> dict[str, float]:
        """The stages seen so far, in seconds; a stage whose ends were not both seen is left out."""
        spans = {"retrieve": ("retriever_start", "retriever_end"),
                 "prompt": ("retriever_end", "llm_start"),
                 "prefill": ("llm_start", "first_token"),
                 "decode": ("first_token", "llm_end")}
        return {name: self.marks[end] - self.marks[start]
                for name, (start, end) in spans.items()
                if start in self.marks and end in self.marks}
