"""The service layer the CLI and the web app share: settings in, models loaded once, answers out."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kbqa.chain import Source, build_qa_chain, is_refusal
from kbqa.config import Settings
from kbqa.errors import KnowledgeBaseError
from kbqa.prompts import build_prompt


@dataclass
class Answer:
    """A finished answer with its sources and where the time went (seconds)."""

    question: str
    text: str
    sources: list[Source]
    refused: bool
    timings: dict[str, float] = field(default_factory=dict)


class KbqaService:
    """Owns the embedder, the LLM and open knowledge bases for one process."""

    def __init__(self, settings: Settings, *, embeddings: Any = None, llm: Any = None) -> None:
        self.settings = settings
        if embeddings is not None:
            self.__dict__["embeddings"] = embeddings
        if llm is not None:
            self.__dict__["llm"] = llm
        self._kbs: dict[str, Any] = {}

    @cached_property
    def embeddings(self) -> Any:
        from kbqa.embeddings import load_embedded_default, load_sentence_transformer

        if self.settings.embedder == "embedded":
            return load_embedded_default()
        return load_sentence_transformer(Path(self.settings.embedder))

    @cached_property
    def llm(self) -> Any:
        from kbqa.fusion import load_adapters
        from kbqa.llm import LocalLLM
        from kbqa.models import resolve_llm

        s = self.settings
        folder = resolve_llm(s.llm, s.cache_dir, s.llm_dtype)
        llm = LocalLLM.from_folder(folder, dtype=s.llm_dtype, max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, top_p=s.top_p,
                                   repetition_penalty=s.repetition_penalty)
        if s.adapters:
            llm.model, reports = load_adapters(llm.model, list(s.adapters))
            llm.adapters = [report.folder for report in reports]
        return llm

    def knowledge_base(self, name: str | None = None, *, create: bool = False) -> Any:
        """Open (or create) a knowledge base by name; opened ones are reused."""
        from kbqa.store import KnowledgeBase

        name = name or self.settings.kb
        if name not in self._kbs:
            root = self.settings.kb_root
            if create:
                kb = KnowledgeBase.open_or_create(root, name, self.embeddings,
                                                  chunk_size=self.settings.chunk_size,
                                                  chunk_overlap=self.settings.chunk_overlap)
            elif name in KnowledgeBase.list_names(root):
                kb = KnowledgeBase.open(root, name, self.embeddings)
            else:
                raise KnowledgeBaseError(f"knowledge base '{name}' does not exist "
                                         f"(create it with `kbqa ingest PATH --kb {name}`)")
            self._kbs[name] = kb
        return self._kbs[name]

    def ingest(self, paths: Iterable[Path], kb_name: str | None = None,
               progress: bool = False) -> list[Any]:
        kb = self.knowledge_base(kb_name, create=True)
        return kb.ingest([Path(p) for p in paths], progress=progress)

    def retriever(self, kb_name: str | None = None, top_k: int | None = None) -> Any:
        from kbqa.retrieval import KnowledgeBaseRetriever

        s = self.settings
        return KnowledgeBaseRetriever(kb=self.knowledge_base(kb_name), mode=s.retrieval_mode,
                                      k=top_k or s.top_k, score_threshold=s.score_threshold,
                                      min_coverage=s.min_coverage)

    def chain(self, kb_name: str | None = None, top_k: int | None = None) -> Any:
        return build_qa_chain(self.retriever(kb_name, top_k), self.llm,
                              build_prompt(self.settings.prompt_template),
                              history_turns=self.settings.history_turns)

    def stream(self, question: str, kb_name: str | None = None,
               history: list[tuple[str, str]] | None = None,
               top_k: int | None = None) -> Iterator[tuple[str, Any]]:
        """Events: ('sources', [Source]) once, then ('token', str) as generated, then ('done', Answer)."""
        if not question.strip():
            raise KnowledgeBaseError("the question is empty")
        chain = self.chain(kb_name, top_k)
        start = time.perf_counter()
        timings: dict[str, float] = {}
        sources: list[Source] = []
        parts: list[str] = []
        for chunk in chain.stream({"question": question, "history": history or []}):
            if "docs" in chunk:
                timings["retrieve"] = time.perf_counter() - start
                sources = [Source.from_document(d) for d in chunk["docs"]]
                yield "sources", sources
            if chunk.get("answer"):
                if not parts:
                    timings["first_token"] = time.perf_counter() - start
                parts.append(chunk["answer"])
                yield "token", chunk["answer"]
        timings["total"] = time.perf_counter() - start
        text = "".join(parts).strip()
        yield "done", Answer(question=question, text=text, sources=sources,
                             refused=is_refusal(text), timings=timings)

    def ask(self, question: str, kb_name: str | None = None,
            history: list[tuple[str, str]] | None = None, top_k: int | None = None) -> Answer:
        for kind, value in self.stream(question, kb_name, history, top_k):
            if kind == "done":
                return value
        raise AssertionError("stream ended without an answer")  # pragma: no cover
