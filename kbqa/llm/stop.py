"""A stop signal that reaches the model through LangChain's callbacks.

Closing a LangChain stream early does not close the model's own stream at once: LangChain's
runnables let it run on to its token limit while the close waits. A `StopSignal` passed in the
run's callbacks is inherited by the LLM run, and LocalLLM stops generating once it is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from langchain_core.callbacks import BaseCallbackHandler


class StopSignal(BaseCallbackHandler):
    """Set it (`stop()`) and every LocalLLM generation in the run ends at its next token."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def stop(self) -> None:
        self.event.set()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


def signals_in(handlers: Iterable[object]) -> list[threading.Event]:
    """The stop events among a run's callback handlers."""
    return [h.event for h in handlers if isinstance(h, StopSignal)]
