"""The QA chain in LCEL: question → retriever → prompt → LLM → answer, with the sources kept.

Input: {"question": str, "history": [(question, answer), ...] (optional)}.
Output: {"question", "docs", "answer"}; `.stream()` yields the docs first and
then the answer token by token. When retrieval finds nothing above the score
threshold the chain answers the fixed refusal without calling the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseLanguageModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from kbqa.qa.prompts import REFUSAL, build_prompt, format_context, format_history

SNIPPET_CHARS = 120


@dataclass(frozen=True)
class Source:
    """One cited passage, as the CLI, the UI and the evaluator show it."""

    filename: str
    source: str
    score: float | None  # dense cosine similarity when known (higher = closer), else the rank score
    snippet: str
    page: int | None = None
    heading: str | None = None
    chunk_id: int | None = None

    @classmethod
    def from_document(cls, document: Document) -> "Source":
        meta = document.metadata
        text = " ".join(document.page_content.split())
        return cls(filename=str(meta.get("filename") or meta.get("source") or "?"),
                   source=str(meta.get("source", "")),
                   score=meta["dense_score"] if meta.get("dense_score") is not None else meta.get("score"),
                   snippet=text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else ""),
                   page=meta.get("page"), heading=meta.get("heading"),
                   chunk_id=meta.get("chunk_id"))

    def location(self) -> str:
        """'handbook.md · 年假' or 'price.pdf p.2': where a reader finds the passage."""
        if self.page:
            return f"{self.filename} p.{self.page}"
        return f"{self.filename} · {self.heading}" if self.heading else self.filename


def is_refusal(answer: str) -> bool:
    """Whether an answer is the template's fixed 'cannot answer' phrase (allowing punctuation)."""
    return REFUSAL in answer.replace(" ", "")


def build_qa_chain(retriever: BaseRetriever, llm: BaseLanguageModel,
                   prompt: PromptTemplate | None = None, history_turns: int = 3) -> Runnable:
    """Compose retriever | prompt | llm; any LangChain retriever and LLM fit."""
    prompt = prompt or build_prompt()

    def render(inputs: dict[str, Any]) -> str:
        history = format_history(inputs.get("history") or [], history_turns)
        return prompt.format(context=format_context(inputs["docs"]),
                             question=inputs["question"], history=history)

    answer_with_llm = RunnableLambda(render) | llm | StrOutputParser()
    refuse = RunnableLambda(lambda _: REFUSAL)

    def route(inputs: dict[str, Any]) -> Runnable:
        return answer_with_llm if inputs["docs"] else refuse

    return (RunnablePassthrough.assign(docs=itemgetter("question") | retriever)
            | RunnablePassthrough.assign(answer=RunnableLambda(route)))
