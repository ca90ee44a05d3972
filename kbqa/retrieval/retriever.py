"""The LangChain retriever over a KnowledgeBase: `search` behind BaseRetriever, for LCEL."""

from __future__ import annotations

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from kbqa.kb.store import KnowledgeBase
from kbqa.retrieval.rerank import Reranker
from kbqa.retrieval.search import (DEFAULT_MODE, DEFAULT_SCORE_THRESHOLD, RetrievalMode,
                                   search)


class KnowledgeBaseRetriever(BaseRetriever):
    """LangChain retriever over a KnowledgeBase (composes in LCEL: ``retriever | prompt | llm``).

    `mode`: "dense" (embedding cosine), "bm25" (CJK character BM25) or "hybrid" (RRF of both).
    `score_threshold`: minimum DENSE cosine similarity in [-1, 1], higher = more similar; applied
    in every mode (bm25 mode then embeds the query too); None keeps everything.
    `min_coverage`: minimum IDF-weighted share of the query's terms a chunk must contain (0..1);
    None keeps everything. When nothing passes, the QA chain refuses without calling the LLM.
    `mmr`: None, or the MMR balance in 0..1 (1 = relevance only) for diverse top-k chunks.
    `reranker`: None, or a kbqa.retrieval.rerank.Reranker that reorders the candidates.
    Each Document's metadata carries chunk_id, score, dense_score, bm25_score and rank (1-based).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: KnowledgeBase
    mode: RetrievalMode = DEFAULT_MODE
    k: int = Field(default=4, ge=1)
    score_threshold: float | None = DEFAULT_SCORE_THRESHOLD
    min_coverage: float | None = None
    mmr: float | None = Field(default=None, ge=0.0, le=1.0)
    reranker: Reranker | None = None

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return search(self.kb, query, mode=self.mode, k=self.k,
                      score_threshold=self.score_threshold, min_coverage=self.min_coverage,
                      mmr=self.mmr, reranker=self.reranker)
