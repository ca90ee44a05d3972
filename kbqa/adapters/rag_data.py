"""Training examples shaped like kbqa's real prompts: retrieved passages, some without the answer.

A reader adapter trained on one clean passage learns to copy spans but not to refuse. Here each
question gets the passages kbqa's own retriever returns for it (same splitter, headings, top-k),
so the distractors are the realistic same-topic ones; for a share of the questions every passage
holding the answer is removed and the target becomes the fixed refusal.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_core.documents import Document

from kbqa.adapters.train import Example
from kbqa.qa.prompts import REFUSAL, build_prompt, format_context

Retrieve = Callable[[str], list[Document]]


@dataclass(frozen=True)
class RagQuestion:
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class RagMix:
    """What the examples hold: answerable vs refusal, and what was skipped, for the model card."""

    answerable: int
    refusals: int
    skipped_no_gold: int
    skipped_empty: int


def rag_examples(questions: Sequence[RagQuestion], retrieve: Retrieve, *, top_k: int = 3,
                 refusal_share: float = 0.3, seed: int = 0) -> tuple[list[Example], RagMix]:
    """Examples from `retrieve` (question → ranked passages, more than top_k of them).

    Answerable: the first top_k passages, kept only if one holds an answer (else the question
    teaches nothing the reader can do). Refusal: the first top_k passages that hold no answer.
    """
    if not 0.0 <= refusal_share <= 1.0:
        raise ValueError(f"refusal_share must be in [0, 1], got {refusal_share}")
    rng = random.Random(seed)
    prompt = build_prompt()
    examples: list[Example] = []
    answerable = refusals = no_gold = empty = 0
    for item in questions:
        ranked = retrieve(item.question)

        def holds_answer(doc: Document) -> bool:
            return any(answer in doc.page_content for answer in item.answers if answer)

        if rng.random() < refusal_share:
            context = [doc for doc in ranked if not holds_answer(doc)][:top_k]
            target = REFUSAL
        else:
            context = ranked[:top_k]
            if not any(holds_answer(doc) for doc in context):
                no_gold += 1
                continue
            target = item.answers[0]
        if not context:
            empty += 1
            continue
        examples.append(Example(prompt.format(context=format_context(context),
                                              question=item.question), target))
        if target == REFUSAL:
            refusals += 1
        else:
            answerable += 1
    rng.shuffle(examples)
    return examples, RagMix(answerable, refusals, no_gold, empty)


def retrieval_over(docs_jsonl: Path, home: Path, n: int) -> Retrieve:
    """Index docs.jsonl as a knowledge base under `home` with the default settings; the result
    returns the first `n` passages kbqa's default retrieval gives a question."""
    from kbqa.config import Settings
    from kbqa.embeddings.embedders import load_embedded_default
    from kbqa.ingest.jsonl_docs import materialise_docs
    from kbqa.kb.store import KnowledgeBase
    from kbqa.retrieval.retriever import KnowledgeBaseRetriever

    defaults = Settings(home=home)
    folder, problems = materialise_docs(docs_jsonl, home / "docs")
    for problem in problems:
        print(problem)
    kb = KnowledgeBase.open_or_create(home / "kb", "train", load_embedded_default(),
                                      chunk_size=defaults.kb.chunk_size,
                                      chunk_overlap=defaults.kb.chunk_overlap)
    kb.ingest([folder], progress=True)
    retriever = KnowledgeBaseRetriever(kb=kb, mode=defaults.retrieval.mode, k=n,
                                       score_threshold=defaults.retrieval.score_threshold,
                                       min_coverage=defaults.retrieval.min_coverage)
    return retriever.invoke
