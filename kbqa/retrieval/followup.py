"""Retrieval for a follow-up question: "那一个月最多呢？" names nothing a search can find.

The question is searched alone and, when that finds fewer passages than the prompt takes, once
more with the conversation's last questions in front of it; the second search fills the free
places with passages that still bear on the question itself. A question that finds enough on
its own keeps its own passages, so a conversation costs a question on a new topic nothing
(fusing both rankings instead did: docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable

from kbqa.kb.lexical import searchable_text
from kbqa.retrieval.bm25 import bm25_index
from kbqa.retrieval.retriever import KnowledgeBaseRetriever

Turn = tuple[str, str]  # (question, answer)


def search_query(question: str, history: Sequence[Turn], history_questions: int) -> str:
    """The second search's query: the last `history_questions` questions, then this one."""
    earlier = [turn[0] for turn in history[-history_questions:]] if history_questions else []
    return " ".join([*earlier, question])


def retrieve_with_history(retriever: BaseRetriever | Runnable, question: str,
                          history: Sequence[Turn] | None, history_questions: int) -> list[Document]:
    """The question's own passages; when they are fewer than the retriever's k (a follow-up
    often passes no coverage gate alone), the rest from the question in context."""
    alone: list[Document] = retriever.invoke(question)
    query = search_query(question, history or [], history_questions)
    k = getattr(retriever, "k", None)  # a KnowledgeBaseRetriever's; other retrievers search again
    if query == question or (isinstance(k, int) and len(alone) >= k):
        return alone
    in_context: list[Document] = retriever.invoke(query)
    wanted = max(len(in_context), len(alone))  # the retriever's k, unless both found fewer
    seen = {_key(doc) for doc in alone}
    on_topic = _still_about(retriever, question)
    extra = [doc for doc in in_context if _key(doc) not in seen and on_topic(doc)]
    return [*alone, *extra][:wanted]


def _still_about(retriever: BaseRetriever | Runnable, question: str) -> Callable[[Document], bool]:
    """Whether a passage found in context still bears on the question itself: it holds at least
    half the share of the question's terms the coverage gate asks of a passage found alone.

    Without it the earlier questions' terms alone carry their passages through the gate, and a
    question the documents cannot answer, asked after an unrelated one, is no longer refused.
    """
    if not isinstance(retriever, KnowledgeBaseRetriever) or not retriever.min_coverage:
        return lambda _: True
    lexical = bm25_index(retriever.kb)
    least = retriever.min_coverage / 2
    def holds_enough(doc: Document) -> bool:
        return lexical.coverage(question, searchable_text(doc.page_content, doc.metadata)) >= least

    return holds_enough


def _key(doc: Document) -> str:
    return str(doc.metadata.get("chunk_id", doc.page_content))
