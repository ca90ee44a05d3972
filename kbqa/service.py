"""The service layer the CLI, web app, server and evaluator share: settings in, models loaded once, answers out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from langchain_core.documents import Document
from langchain_core.language_models import BaseLLM
from langchain_core.runnables import Runnable

from kbqa.config import Settings
from kbqa.embeddings.embedders import EMBEDDER_NAMES
from kbqa.errors import ConfigError, KnowledgeBaseError, KnowledgeBaseMissing, SettingProblem
from kbqa.kb import folders
from kbqa.llm.stop import StopSignal
from kbqa.models import Models
from kbqa.qa.answers import Answer, Source, VariantAnswer
from kbqa.qa.chain import fixed_context, is_refusal, qa_chain
from kbqa.qa.grounding import Grounding
from kbqa.qa.prompts import build_prompt
from kbqa.qa.timing import StageTimer

if TYPE_CHECKING:  # the modules behind these pull in torch: imported when first used
    from kbqa.adapters.variants import Variant, VariantModel
    from kbqa.conversations import ConversationStore
    from kbqa.embeddings.embedders import EncoderEmbeddings
    from kbqa.kb.freshness import Identity
    from kbqa.kb.results import IngestResult
    from kbqa.kb.store import KnowledgeBase
    from kbqa.kb.uploads import UploadOutcome
    from kbqa.retrieval.rerank import Reranker
    from kbqa.retrieval.retriever import KnowledgeBaseRetriever

# what `stream`, `stream_variant` and `compare` yield: ('sources', [Source]), ('token', str),
# ('done', Answer) or ('answer', VariantAnswer)
Event = tuple[str, list[Source] | str | Answer | VariantAnswer]


class KbqaService:
    """Owns the models (kbqa.models.Models) and the open knowledge bases of one process.

    Models load on first use; `embeddings` and `llm` may be injected (tests, embedding kbqa).
    """

    def __init__(self, settings: Settings, *, embeddings: EncoderEmbeddings | None = None,
                 llm: BaseLLM | None = None) -> None:
        self.settings = settings
        self.models = Models(settings, embeddings=embeddings, llm=llm)
        self._kbs: dict[str, KnowledgeBase] = {}
        self._kb_identity: dict[str, Identity] = {}
        self._kb_locks: dict[str, threading.Lock] = {}  # one per name: opening one never waits on another
        self._kb_locks_lock = threading.Lock()

    @property
    def embeddings(self) -> EncoderEmbeddings:
        return self.models.embeddings

    @property
    def llm(self) -> BaseLLM:
        return self.models.llm

    @property
    def base_llm(self) -> BaseLLM:
        return self.models.base_llm

    @property
    def variant_model(self) -> VariantModel:
        return self.models.variant_model

    @property
    def reranker(self) -> Reranker | None:
        return self.models.reranker

    @cached_property
    def conversations(self) -> ConversationStore:
        """The web app's saved conversations and answer feedback (HOME/conversations.sqlite3)."""
        from kbqa.conversations import ConversationStore

        return ConversationStore(self.settings.home / "conversations.sqlite3")

    def models_ready(self, variant: Variant | None = None) -> bool:
        """Whether a question with `variant` can start without loading a model or adapter first."""
        return self.models.ready(self.default_variant() if variant is None else variant)

    def load_models(self, variant: Variant | None = None) -> None:
        """Load the embedder, the shared base model and `variant`'s adapters now (a front end
        shows this as its own step; otherwise the first question pays for it unseen)."""
        variant = self.default_variant() if variant is None else variant
        self.models.embeddings  # noqa: B018 - loads it
        self.models.variant_model.prepare(variant)

    def knowledge_base(self, name: str | None = None, *, create: bool = False) -> KnowledgeBase:
        """Open (or create) a knowledge base by name; an opened one is reused while it is still
        the base on disk (one stat per call), else reopened: see kbqa.kb.freshness."""
        from kbqa.kb.freshness import identity, retire
        from kbqa.kb.store import KnowledgeBase

        name = name or self.settings.kb.name
        root = Path(self.settings.kb_root).expanduser()
        with self._name_lock(name):
            cached = self._kbs.get(name)
            if cached is not None and identity(root / name) == self._kb_identity[name]:
                return cached
            if cached is not None:  # deleted or re-created by someone else since it was opened
                del self._kbs[name], self._kb_identity[name]
                retire(cached)
            found = identity(root / name) if name in folders.list_names(root) else None
            vector_store = self.settings.vector_store_config
            if found is None and not create:
                raise KnowledgeBaseMissing(f"knowledge base '{name}' does not exist "
                                         f"(create it with `kbqa ingest PATH --kb {name}`)")
            if found is None:
                kb = KnowledgeBase.open_or_create(root, name, self.embeddings,
                                                  chunk_size=self.settings.kb.chunk_size,
                                                  chunk_overlap=self.settings.kb.chunk_overlap,
                                                  index_type=self.settings.kb.index_type,
                                                  vector_store=vector_store)
                found = identity(root / name)
            else:
                kb = KnowledgeBase.open(root, name, self.embeddings,
                                        index_type=self.settings.kb.index_type,
                                        vector_store=vector_store)
            if found is not None:  # a base deleted as it was made is checked again next call
                self._kbs[name], self._kb_identity[name] = kb, found
            return kb

    def _name_lock(self, name: str) -> threading.Lock:
        with self._kb_locks_lock:
            return self._kb_locks.setdefault(name, threading.Lock())

    def ingest(self, paths: Iterable[Path], kb_name: str | None = None,
               progress: bool = False) -> list[IngestResult]:
        """Ingest files or folders into a knowledge base, creating it if needed."""
        kb = self.knowledge_base(kb_name, create=True)
        return kb.ingest([Path(p) for p in paths], progress=progress)

    def retriever(self, kb_name: str | None = None,
                  top_k: int | None = None) -> KnowledgeBaseRetriever:
        """The configured retriever over a knowledge base."""
        from kbqa.retrieval.retriever import KnowledgeBaseRetriever

        s = self.settings
        return KnowledgeBaseRetriever(kb=self.knowledge_base(kb_name), mode=s.retrieval.mode,
                                      k=top_k or s.retrieval.top_k, score_threshold=s.retrieval.score_threshold,
                                      min_coverage=s.retrieval.min_coverage, mmr=s.retrieval.mmr,
                                      reranker=self.reranker)

    def chain(self, kb_name: str | None = None, top_k: int | None = None) -> Runnable:
        """retriever | prompt | llm with the configured model (see kbqa.qa.chain.qa_chain)."""
        return qa_chain(self.settings, self.retriever(kb_name, top_k), self.llm,
                        library=self.library(kb_name))

    def library(self, kb_name: str | None = None) -> Callable[[], list[str]]:
        """The knowledge base's file names without their extension, read when called: the
        grounding check's list of what documents are named after (kbqa.qa.grounding). A base
        another process removed since the passages were read gives none: the check then reads
        the passages' own names, and the answer is not lost."""
        def names() -> list[str]:
            try:
                records = self.knowledge_base(kb_name).documents()
            except KnowledgeBaseMissing:
                return []
            return [PurePath(record.filename).stem for record in records]

        return names

    def stream(self, question: str, kb_name: str | None = None,
               history: list[tuple[str, str]] | None = None,
               top_k: int | None = None) -> Iterator[Event]:
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

    # ------------------------------------------------------------------ variants, KB admin, settings

    def list_knowledge_bases(self) -> list[str]:
        """Knowledge bases under the data directory, sorted."""
        return folders.list_names(self.settings.kb_root)

    def create_knowledge_base(self, name: str) -> KnowledgeBase:
        """Create an empty knowledge base (KnowledgeBaseError if the name is unsafe or taken)."""
        name = folders.validate_name(name.strip())
        if name in self.list_knowledge_bases():
            raise KnowledgeBaseError(f"knowledge base '{name}' already exists")
        return self.knowledge_base(name, create=True)

    def delete_knowledge_base(self, name: str, *, lock_timeout: float | None = None) -> None:
        """Delete a knowledge base with its uploaded files; waits `lock_timeout` seconds (default:
        the store's) for a running write, then raises KnowledgeBaseBusy."""
        from kbqa.kb.freshness import retire

        with self._name_lock(name):
            folders.delete_kb(self.settings.kb_root, name,
                              lock_timeout=(folders.DEFAULT_LOCK_TIMEOUT_S if lock_timeout is None
                                            else lock_timeout),
                              vector_store=self.settings.vector_store_config)
            kb = self._kbs.pop(name, None)
            self._kb_identity.pop(name, None)
            if kb is not None:  # a request may still be reading it: closed when it lets go
                retire(kb)

    def ingest_uploads(self, kb_name: str, uploads: Iterable[tuple[str, bytes]],
                       on_progress: Callable[[int, int, str], None] | None = None,
                       on_page: Callable[[int, int], None] | None = None
                       ) -> list[UploadOutcome]:
        """Store uploaded (name, bytes) files inside the KB and ingest them; one outcome each.

        ``on_progress(done, total, name)`` comes before each file, ``on_page(done, total)`` after
        each page of a PDF or image.
        """
        from kbqa.kb.uploads import ingest_uploads

        return ingest_uploads(self.knowledge_base(kb_name), uploads,
                              max_file_mb=self.settings.kb.max_file_mb, on_progress=on_progress,
                              on_page=on_page)

    def remove_document(self, kb_name: str, source: str) -> int:
        """Remove a document and, when it was uploaded, its stored copy."""
        from kbqa.kb.uploads import remove_document

        return remove_document(self.knowledge_base(kb_name), source)

    def adapter_choices(self, roots: Iterable[Path] = ()) -> list[Path]:
        """Configured adapters, then adapter folders under HOME/adapters and the given roots."""
        from kbqa.adapters.variants import discover_adapters

        return discover_adapters(self.settings.llm.adapters, [self.settings.home / "adapters", *roots])

    def default_variant(self) -> Variant:
        """The variant the settings configure (their adapters, or plain)."""
        from kbqa.adapters.variants import Variant

        return Variant.of(self.settings.llm.adapters)

    def stream_variant(self, question: str, variant: Variant | None = None,
                       kb_name: str | None = None, history: list[tuple[str, str]] | None = None,
                       top_k: int | None = None) -> Iterator[Event]:
        """Like `stream`, with the shared base model in `variant`'s state (None: the configured one).

        The model stays locked to this variant until the generator finishes or is closed.
        """
        if not question.strip():
            raise KnowledgeBaseError("the question is empty")
        variant = self.default_variant() if variant is None else variant
        retriever = self.retriever(kb_name, top_k)
        with self.variant_model.activate(variant) as llm:
            chain = qa_chain(self.settings, retriever, llm, library=self.library(kb_name))
            yield from _events(chain, question, history)

    def retrieve(self, question: str, kb_name: str | None = None, top_k: int | None = None,
                 history: list[tuple[str, str]] | None = None) -> list[Document]:
        """The passages that would go into the prompt (after the coverage gate); may be empty.
        With `history`, a follow-up is searched in its context too (kbqa.retrieval.followup)."""
        from kbqa.retrieval.followup import retrieve_with_history

        if not question.strip():
            raise KnowledgeBaseError("the question is empty")
        return retrieve_with_history(self.retriever(kb_name, top_k), question, history,
                                     self.settings.retrieval.history_questions)

    def answer_with_context(self, question: str, docs: list[Document],
                            variant: Variant) -> VariantAnswer:
        """Answer from a fixed context with one variant; refusal without a model call when empty."""
        from kbqa.errors import KbqaError

        applied = None
        try:
            if not variant.is_plain:
                applied = self.variant_model.check_applied(variant)
            with self.variant_model.activate(variant) as llm:
                chain = qa_chain(self.settings, fixed_context(docs), llm, history=False)
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

    def compare(self, question: str, variants: list[Variant], kb_name: str | None = None,
                top_k: int | None = None) -> Iterator[Event]:
        """Retrieve once, then every variant answers from the SAME passages.

        Events: ('sources', [Source]) then ('answer', VariantAnswer) per variant, in order.
        """
        docs = self.retrieve(question, kb_name, top_k)
        yield "sources", [Source.from_document(d, question) for d in docs]
        for variant in variants:
            yield "answer", self.answer_with_context(question, docs, variant)

    def update_settings(self, changes: Mapping[str, object]) -> Settings:
        """Validate `changes` (short names) on top of the current settings, save them, apply them.

        Only the changed keys go into config.toml (values from the environment stay out of it, and
        secrets never reach it). Raises ConfigError with the reason, writing nothing, when any value
        is invalid. Generation parameters apply at once; a new model, dtype or embedder is loaded on
        next use.
        """
        from kbqa.config import update_config_file
        from kbqa.kb.freshness import retire

        current = self.settings
        changes = {k: v for k, v in changes.items() if k != "home"}
        try:
            new = current.changed(changes)
        except ConfigError as exc:  # also report the other fields' problems, all at once
            bad = {problem.name for problem in exc.problems}
            try:
                rest = current.changed({k: v for k, v in changes.items() if k not in bad})
            except ConfigError:
                raise exc from exc.__cause__
            more = [p for p in _settings_problems(rest) if p.name not in bad]
            if not more:
                raise
            raise ConfigError("; ".join([str(exc), *(p.message for p in more)]),
                              [*exc.problems, *more]) from exc
        problems = _settings_problems(new)
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(p.message for p in problems),
                              problems)
        update_config_file(current.config_path, changes)
        self.settings = new
        if self.models.apply(new):  # another embedder: every open base must reopen with it
            for kb in self._kbs.values():
                retire(kb)
            self._kbs.clear()
            self._kb_identity.clear()
        return new


def _settings_problems(settings: Settings) -> list[SettingProblem]:
    """Checks pydantic cannot do: the prompt template, and that named folders exist."""
    from kbqa.adapters.variants import is_adapter_folder

    problems = []
    try:
        build_prompt(settings.answer.prompt_template)
    except ConfigError as exc:
        problems.append(SettingProblem("prompt_template", "template", str(exc)))
    for folder in settings.llm.adapters:
        if not is_adapter_folder(Path(folder).expanduser()):
            problems.append(SettingProblem(
                "adapters", "not_adapter",
                f"adapters: {folder} is not a peft adapter folder (no adapter_config.json)",
                {"path": str(folder)}))
    if not settings.llm.model.startswith(("embedded", "openai:")) and not Path(
            settings.llm.model).expanduser().is_dir():
        problems.append(SettingProblem(
            "llm", "missing_path", f"llm: model folder {settings.llm.model} does not exist",
            {"path": settings.llm.model}))
    if settings.embeddings.model not in EMBEDDER_NAMES and not Path(
            settings.embeddings.model).expanduser().is_dir():
        problems.append(SettingProblem(
            "embedder", "missing_path", f"embedder: folder {settings.embeddings.model} does not exist",
            {"path": settings.embeddings.model}))
    return problems


def _events(chain: Runnable, question: str, history: list[tuple[str, str]] | None
            ) -> Iterator[Event]:
    """Run the chain streaming: ('sources', [Source]), ('token', str)..., ('done', Answer).

    Timings: retrieve, first_token and total from the start; prompt, prefill and decode
    per stage (kbqa.qa.timing.StageTimer).
    """
    start = time.perf_counter()
    timer = StageTimer()
    timings: dict[str, float] = {}
    sources: list[Source] = []
    parts: list[str] = []
    grounding: Grounding | None = None
    stop = StopSignal()  # closing this stream early stops the model at its next token
    chunks = chain.stream({"question": question, "history": history or []},
                          config={"callbacks": [timer, stop]})
    try:
        for chunk in chunks:
            if "docs" in chunk:
                timings["retrieve"] = time.perf_counter() - start
                sources = [Source.from_document(d, question) for d in chunk["docs"]]
                yield "sources", sources
            if chunk.get("answer"):
                if not parts:
                    timings["first_token"] = time.perf_counter() - start
                parts.append(chunk["answer"])
                yield "token", chunk["answer"]
            if "grounded" in chunk:
                grounding = chunk["grounded"]
    finally:
        stop.stop()
        chunks.close()
    timer.wait_for_llm()
    timings["total"] = time.perf_counter() - start
    timings.update(timer.stages())  # the retriever's own span replaces the arrival time if seen
    # the streamed tokens are the model's draft; the answer is what the grounding check kept of it
    text = grounding.text if grounding is not None else "".join(parts).strip()
    yield "done", Answer(question=question, text=text, sources=sources,
                         refused=is_refusal(text), timings=timings, usage=timer.usage,
                         finish_reason=timer.finish_reason, grounding=grounding,
                         answerability=timer.answerability)
