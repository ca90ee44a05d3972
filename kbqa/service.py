"""The service layer the CLI and the web app share: settings in, models loaded once, answers out."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kbqa.qa.chain import Source, build_qa_chain, is_refusal
from kbqa.config import Settings
from kbqa.errors import ConfigError, KnowledgeBaseError
from kbqa.qa.prompts import build_prompt
from kbqa.qa.timing import StageTimer


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

    def decode_rate(self) -> float | None:
        """Generated tokens per second after the first one, when the model reported its usage."""
        tokens, seconds = self.usage.get("completion_tokens", 0), self.timings.get("decode", 0.0)
        return (tokens - 1) / seconds if tokens > 1 and seconds > 0 else None


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
        from kbqa.embeddings.embedders import load_embedded_default, load_sentence_transformer

        if self.settings.embedder == "embedded":
            return load_embedded_default()
        return load_sentence_transformer(Path(self.settings.embedder))

    @cached_property
    def llm(self) -> Any:
        from kbqa.adapters import load_adapters
        from kbqa.llm.local import LocalLLM
        from kbqa.llm.loading import resolve_llm
        from kbqa.llm.remote import RemoteLLM, is_remote

        s = self.settings
        if is_remote(s.llm):
            if s.adapters:
                raise ConfigError("adapters cannot be applied to a remote LLM: configure them "
                                  "on the serving side and name that variant in llm")
            return RemoteLLM.from_settings(s)
        folder = resolve_llm(s.llm, s.cache_dir, s.llm_dtype)
        llm = LocalLLM.from_folder(folder, dtype=s.llm_dtype, max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, top_p=s.top_p,
                                   repetition_penalty=s.repetition_penalty)
        if s.adapters:
            from kbqa.llm.quantization import refuse_adapters

            refuse_adapters(llm.model, s.adapters[0])
            llm.model, reports = load_adapters(llm.model, list(s.adapters))
            llm.adapters = [report.folder for report in reports]
        return llm

    def knowledge_base(self, name: str | None = None, *, create: bool = False) -> Any:
        """Open (or create) a knowledge base by name; opened ones are reused."""
        from kbqa.kb.store import KnowledgeBase

        name = name or self.settings.kb
        if name not in self._kbs:
            root = self.settings.kb_root
            vector_store = self.settings.vector_store_config
            if create:
                kb = KnowledgeBase.open_or_create(root, name, self.embeddings,
                                                  chunk_size=self.settings.chunk_size,
                                                  chunk_overlap=self.settings.chunk_overlap,
                                                  index_type=self.settings.index_type,
                                                  vector_store=vector_store)
            elif name in KnowledgeBase.list_names(root):
                kb = KnowledgeBase.open(root, name, self.embeddings,
                                        index_type=self.settings.index_type,
                                        vector_store=vector_store)
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
        from kbqa.retrieval.search import KnowledgeBaseRetriever

        s = self.settings
        return KnowledgeBaseRetriever(kb=self.knowledge_base(kb_name), mode=s.retrieval_mode,
                                      k=top_k or s.top_k, score_threshold=s.score_threshold,
                                      min_coverage=s.min_coverage, mmr=s.mmr,
                                      reranker=self.reranker)

    @cached_property
    def reranker(self) -> Any:
        """The configured cross-encoder (None by default), loaded once."""
        from kbqa.retrieval.rerank import load_reranker

        return load_reranker(self.settings.rerank)

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
        yield from _events(self.chain(kb_name, top_k), question, history)

    def ask(self, question: str, kb_name: str | None = None,
            history: list[tuple[str, str]] | None = None, top_k: int | None = None) -> Answer:
        for kind, value in self.stream(question, kb_name, history, top_k):
            if kind == "done":
                return value
        raise AssertionError("stream ended without an answer")  # pragma: no cover

    # ------------------------------------------------------------------ for the web UI
    # Added for the Streamlit front end: nothing here renders; kbqa/ui/ pages only call these.

    @cached_property
    def base_llm(self) -> Any:
        """The LLM without adapters (variants add them on top, see kbqa.adapters.variants); loaded once."""
        injected = self.__dict__.get("llm")
        if injected is not None and not self.settings.adapters:
            return injected
        if self.settings.llm.startswith("openai:"):
            return self.llm  # a remote model: adapters are chosen on the serving side
        from kbqa.llm.local import LocalLLM
        from kbqa.llm.loading import resolve_llm

        s = self.settings
        folder = resolve_llm(s.llm, s.cache_dir, s.llm_dtype)
        return LocalLLM.from_folder(folder, dtype=s.llm_dtype, max_new_tokens=s.max_new_tokens,
                                    temperature=s.temperature, top_p=s.top_p,
                                    repetition_penalty=s.repetition_penalty)

    @cached_property
    def variant_model(self) -> Any:
        from kbqa.adapters.variants import VariantModel

        return VariantModel(self.base_llm)

    def list_knowledge_bases(self) -> list[str]:
        """Knowledge bases under the data directory, sorted."""
        from kbqa.kb.store import KnowledgeBase

        return KnowledgeBase.list_names(self.settings.kb_root)

    def create_knowledge_base(self, name: str) -> Any:
        """Create an empty knowledge base (KnowledgeBaseError if the name is unsafe or taken)."""
        from kbqa.kb.store import validate_name

        name = validate_name(name.strip())
        if name in self.list_knowledge_bases():
            raise KnowledgeBaseError(f"knowledge base '{name}' already exists")
        return self.knowledge_base(name, create=True)

    def delete_knowledge_base(self, name: str) -> None:
        """Delete a knowledge base with its uploaded files (waits for a running write)."""
        from kbqa.kb.store import KnowledgeBase

        kb = self._kbs.pop(name, None)
        if kb is not None:
            kb.close()
        KnowledgeBase.delete_kb(self.settings.kb_root, name,
                                vector_store=self.settings.vector_store_config)

    def ingest_uploads(self, kb_name: str, uploads: Iterable[tuple[str, bytes]],
                       on_progress: Any = None) -> list[Any]:
        """Store uploaded (name, bytes) files inside the KB and ingest them; one outcome each."""
        from kbqa.kb.uploads import ingest_uploads

        return ingest_uploads(self.knowledge_base(kb_name), uploads,
                              max_file_mb=self.settings.max_file_mb, on_progress=on_progress)

    def remove_document(self, kb_name: str, source: str) -> int:
        from kbqa.kb.uploads import remove_document

        return remove_document(self.knowledge_base(kb_name), source)

    def adapter_choices(self, roots: Iterable[Path] = ()) -> list[Path]:
        """Configured adapters, then adapter folders under HOME/adapters and the given roots."""
        from kbqa.adapters.variants import discover_adapters

        return discover_adapters(self.settings.adapters, [self.settings.home / "adapters", *roots])

    def default_variant(self) -> Any:
        from kbqa.adapters.variants import Variant

        return Variant.of(self.settings.adapters)

    def stream_variant(self, question: str, variant: Any = None,
                       kb_name: str | None = None, history: list[tuple[str, str]] | None = None,
                       top_k: int | None = None) -> Iterator[tuple[str, Any]]:
        """Like `stream`, with the shared base model in `variant`'s state (None: the configured one).

        The model stays locked to this variant until the generator finishes or is closed.
        """
        if not question.strip():
            raise KnowledgeBaseError("the question is empty")
        variant = self.default_variant() if variant is None else variant
        retriever = self.retriever(kb_name, top_k)
        with self.variant_model.activate(variant) as llm:
            chain = build_qa_chain(retriever, llm, build_prompt(self.settings.prompt_template),
                                   history_turns=self.settings.history_turns)
            yield from _events(chain, question, history)

    def retrieve(self, question: str, kb_name: str | None = None,
                 top_k: int | None = None) -> list[Any]:
        """The passages that would go into the prompt (after the coverage gate); may be empty."""
        if not question.strip():
            raise KnowledgeBaseError("the question is empty")
        return self.retriever(kb_name, top_k).invoke(question)

    def answer_with_context(self, question: str, docs: list[Any],
                            variant: Any) -> VariantAnswer:
        """Answer from a fixed context with one variant; refusal without a model call when empty."""
        from langchain_core.runnables import RunnableLambda

        from kbqa.errors import KbqaError

        applied = None
        try:
            if not variant.is_plain:
                applied = self.variant_model.check_applied(variant)
            with self.variant_model.activate(variant) as llm:
                chain = build_qa_chain(RunnableLambda(lambda _: docs), llm,
                                       build_prompt(self.settings.prompt_template), history_turns=0)
                answer = None
                for kind, value in _events(chain, question, None):
                    if kind == "done":
                        answer = value
        except KbqaError as exc:
            return VariantAnswer(variant=variant, text="", refused=False, applied=applied,
                                 error=str(exc))
        assert answer is not None
        timings = {k: v for k, v in answer.timings.items() if k != "retrieve"}
        return VariantAnswer(variant=variant, text=answer.text, refused=answer.refused,
                             timings=timings, applied=applied)

    def compare(self, question: str, variants: list[Any], kb_name: str | None = None,
                top_k: int | None = None) -> Iterator[tuple[str, Any]]:
        """Retrieve once, then every variant answers from the SAME passages.

        Events: ('sources', [Source]) then ('answer', VariantAnswer) per variant, in order.
        """
        docs = self.retrieve(question, kb_name, top_k)
        yield "sources", [Source.from_document(d) for d in docs]
        for variant in variants:
            yield "answer", self.answer_with_context(question, docs, variant)

    def update_settings(self, changes: dict[str, Any]) -> Settings:
        """Validate `changes` on top of the current settings, save them to config.toml, apply them.

        Raises ConfigError with the reason (and writes nothing) when any value is invalid.
        Generation parameters apply at once; a new model, dtype or embedder is loaded on next use.
        """
        from kbqa.config import _validated, save_settings

        current = self.settings
        new = _validated({**current.model_dump(), **changes, "home": current.home})
        problem = _settings_problem(new)
        if problem:
            raise ConfigError(f"invalid settings: {problem}")
        save_settings(new)
        self.settings = new
        if (new.llm, new.llm_dtype) != (current.llm, current.llm_dtype):
            for name in ("llm", "base_llm", "variant_model"):
                self.__dict__.pop(name, None)
        if new.embedder != current.embedder:
            self.__dict__.pop("embeddings", None)
            for kb in self._kbs.values():
                kb.close()
            self._kbs.clear()
        for llm in {id(x): x for x in (self.__dict__.get("llm"), self.__dict__.get("base_llm"))
                    if x is not None}.values():
            llm.max_new_tokens = new.max_new_tokens
            llm.temperature = new.temperature
            llm.top_p = new.top_p
            llm.repetition_penalty = new.repetition_penalty
        return new


# Helpers for the web UI methods above.


@dataclass
class VariantAnswer:
    """One variant's answer to a shared context (the Compare page's column)."""

    variant: Any  # kbqa.adapters.variants.Variant
    text: str
    refused: bool
    timings: dict[str, float] = field(default_factory=dict)
    applied: Any = None  # kbqa.adapters.verify.VerifyReport for adapter variants
    error: str | None = None


def _settings_problem(settings: Settings) -> str | None:
    """Checks pydantic cannot do: the prompt template, and that named folders exist."""
    from kbqa.adapters.variants import is_adapter_folder

    try:
        build_prompt(settings.prompt_template)
    except ConfigError as exc:
        return str(exc)
    for folder in settings.adapters:
        if not is_adapter_folder(Path(folder).expanduser()):
            return f"adapters: {folder} is not a peft adapter folder (no adapter_config.json)"
    if not settings.llm.startswith(("embedded", "openai:")) and not Path(
            settings.llm).expanduser().is_dir():
        return f"llm: model folder {settings.llm} does not exist"
    if settings.embedder != "embedded" and not Path(settings.embedder).expanduser().is_dir():
        return f"embedder: folder {settings.embedder} does not exist"
    return None


def _events(chain: Any, question: str, history: list[tuple[str, str]] | None
            ) -> Iterator[tuple[str, Any]]:
    """Run the chain streaming: ('sources', [Source]), ('token', str)..., ('done', Answer).

    Timings: retrieve, first_token and total from the start; prompt, prefill and decode
    per stage (kbqa.qa.timing.StageTimer).
    """
    start = time.perf_counter()
    timer = StageTimer()
    timings: dict[str, float] = {}
    sources: list[Source] = []
    parts: list[str] = []
    for chunk in chain.stream({"question": question, "history": history or []},
                              config={"callbacks": [timer]}):
        if "docs" in chunk:
            timings["retrieve"] = time.perf_counter() - start
            sources = [Source.from_document(d) for d in chunk["docs"]]
            yield "sources", sources
        if chunk.get("answer"):
            if not parts:
                timings["first_token"] = time.perf_counter() - start
            parts.append(chunk["answer"])
            yield "token", chunk["answer"]
    timer.wait_for_llm()
    timings["total"] = time.perf_counter() - start
    timings.update(timer.stages())  # the retriever's own span replaces the arrival time if seen
    text = "".join(parts).strip()
    yield "done", Answer(question=question, text=text, sources=sources,
                         refused=is_refusal(text), timings=timings, usage=timer.usage,
                         finish_reason=timer.finish_reason)
