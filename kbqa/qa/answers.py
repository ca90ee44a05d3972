"""What an answer is, as every front end shows it: the text, its cited passages, its timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from langchain_core.documents import Document

from kbqa.qa.snippets import SNIPPET_CHARS, snippet

if TYPE_CHECKING:
    from kbqa.adapters.variants import Variant
    from kbqa.adapters.verify import VerifyReport
    from kbqa.qa.grounding import Grounding

__all__ = ["SNIPPET_CHARS", "Answer", "Source", "VariantAnswer"]


@dataclass(frozen=True)
class Source:
    """One cited passage, as the CLI, the UI and the evaluator show it."""

    filename: str
    source: str
    score: float | None  # dense cosine similarity when known (higher = closer), else the rank score
    snippet: str  # one line of prose, or a table's Markdown lines (kbqa.qa.snippets)
    page: int | None = None
    heading: str | None = None
    chunk_id: int | None = None

    @classmethod
    def from_document(cls, document: Document, query: str = "") -> Source:
        """The passage's source; its snippet keeps a table's header and the rows `query` is about."""
        meta = document.metadata
        return cls(filename=str(meta.get("filename") or meta.get("source") or "?"),
                   source=str(meta.get("source", "")),
                   score=meta["dense_score"] if meta.get("dense_score") is not None else meta.get("score"),
                   snippet=snippet(document.page_content, query),
                   page=meta.get("page"), heading=meta.get("heading"),
                   chunk_id=meta.get("chunk_id"))

    def location(self) -> str:
        """'handbook.md · 年假' or 'price.pdf p.2': where a reader finds the passage."""
        if self.page:
            return f"{self.filename} p.{self.page}"
        return f"{self.filename} · {self.heading}" if self.heading else self.filename


@dataclass
class Answer:
    """A finished answer with its sources and where the time went (seconds)."""

    question: str
    text: str
    sources: list[Source]
    refused: bool
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)  # prompt/completion/total tokens, if known
    finish_reason: str | None = None  # "stop" or "length" (the max_new_tokens budget ran out)
    grounding: Grounding | None = None  # the model's draft and what the grounding check made of it
    # the probability the model's probe gave the passages of holding the answer, if it has one
    answerability: float | None = None

    def decode_rate(self) -> float | None:
        """Generated tokens per second after the first one, when the model reported its usage."""
        tokens, seconds = self.usage.get("completion_tokens", 0), self.timings.get("decode", 0.0)
        return (tokens - 1) / seconds if tokens > 1 and seconds > 0 else None


@dataclass
class VariantAnswer:
    """One variant's answer to a shared context (the Compare page's column)."""

    variant: Variant
    text: str
    refused: bool
    timings: dict[str, float] = field(default_factory=dict)
    applied: VerifyReport | None = None  # for adapter variants: did the adapters change the model
    error: str | None = None
