"""Run an evaluation: one knowledge base, one retrieval per question, every variant answers.

Retrieval is done once and shared, so variants differ only in the model. Each
question is also asked with its gold document hidden (when it names one): the
right answer is then the refusal, which measures refusal instead of assuming it.
Answers are appended to answers.jsonl as they come, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from tqdm import tqdm

from kbqa.qa.chain import final_answer, fixed_context, is_refusal, qa_chain
from kbqa.config import Settings
from kbqa.errors import AdapterError, KbqaError
from kbqa.evaluation.data import (Question, Variant, parse_variant, read_questions,
                                  with_default_reader)
from kbqa.ingest.jsonl_docs import materialise_docs
from kbqa.evaluation.scoring import summarise
from kbqa.evaluation.metrics import exact_match, f1_score, rouge_l
from kbqa.service import KbqaService
from kbqa.adapters.variants import Variant as ModelVariant
from kbqa.adapters.variants import VariantModel

__all__ = ["EvalConfig", "Variant", "parse_variant", "read_questions", "run_eval"]

RETRIEVE_K = 5


@dataclass(frozen=True)
class EvalConfig:
    questions: Path
    docs: tuple[Path, ...]
    variants: tuple[Variant, ...]
    out: Path
    limit: int | None = None
    retrieval_only: bool = False


@dataclass
class Retrieved:
    """One question's shared retrieval: the answerable context and the gold-hidden context."""

    chunk_ids: list[int]
    scores: list[float]
    texts: list[str]
    doc_ids: list[str]
    context: list[Document]
    context_without_gold: list[Document] | None


def _doc_id(document: Document) -> str:
    return Path(str(document.metadata.get("source", ""))).stem


def _retrieve(service: KbqaService, question: Question) -> Retrieved:
    top_k = service.settings.retrieval.top_k
    wide = service.retriever(top_k=max(RETRIEVE_K, top_k) + 10).invoke(question.question)
    shown = wide[:max(RETRIEVE_K, top_k)]
    hidden = None
    if question.doc_id:
        hidden = [d for d in wide if _doc_id(d) != question.doc_id][:top_k]
    return Retrieved(chunk_ids=[d.metadata.get("chunk_id") for d in shown],
                     scores=[d.metadata.get("score") for d in shown],
                     texts=[d.page_content for d in shown],
                     doc_ids=[_doc_id(d) for d in shown],
                     context=shown[:top_k], context_without_gold=hidden)


def retrieval_row(question: Question, retrieved: Retrieved) -> dict[str, float]:
    """hit@k: a gold answer string occurs in a retrieved chunk; doc@5: the gold document does."""
    hits = [any(a in text for a in question.answers) for text in retrieved.texts]
    row = {"hit@1": float(any(hits[:1])), "hit@5": float(any(hits[:5])),
           "mrr": next((1.0 / rank for rank, hit in enumerate(hits, start=1) if hit), 0.0)}
    if question.doc_id:
        row["doc@5"] = float(question.doc_id in retrieved.doc_ids[:5])
    return row


class AnswerCache:
    """answers.jsonl as an append-only cache keyed by (variant, kind, qid)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple[str, str, str], dict] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[(row["variant"], row["kind"], row["qid"])] = row
                except (ValueError, KeyError):
                    continue  # a line cut short by an interrupted run: redo that answer

    def get(self, variant: str, kind: str, qid: str) -> dict | None:
        return self.rows.get((variant, kind, qid))

    def add(self, row: dict) -> None:
        self.rows[(row["variant"], row["kind"], row["qid"])] = row
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()


def check_variants(models: VariantModel, variants: tuple[Variant, ...]) -> dict[str, dict]:
    """Load every adapter variant strictly and prove it changes the model, before any answering.

    A variant identical to the plain model aborts the run: comparing it would measure nothing.
    """
    checks = {}
    for variant in variants:
        if variant.is_plain:
            continue
        check = models.check_applied(ModelVariant.of(variant.adapters))
        if not check.applied:
            raise AdapterError(f"variant '{variant.name}' is identical to the plain model "
                               f"({'; '.join(check.reasons)}): its adapters apply nothing, so "
                               "comparing it would be meaningless")
        checks[variant.name] = {"max_logit_diff": check.max_logit_diff, "modules": check.modules}
    return checks


def _answer(llm: Any, settings: Settings, question: Question, context: list[Document],
            library: Callable[[], Sequence[str]]) -> dict:
    chain = qa_chain(settings, fixed_context(context), llm, history=False, library=library)
    start = time.perf_counter()
    answer = final_answer(chain.invoke({"question": question.question}))
    latency = time.perf_counter() - start
    tokens = len(llm.tokenizer(answer)["input_ids"]) if context else 0
    return {"answer": answer, "latency_s": latency, "tokens": tokens,
            "refused": is_refusal(answer)}


def _fingerprint(settings: Settings, config: EvalConfig) -> dict:
    return {"llm": settings.llm.model, "top_k": settings.retrieval.top_k, "mode": settings.retrieval.mode,
            "min_coverage": settings.retrieval.min_coverage, "prompt": settings.answer.prompt_template,
            "max_new_tokens": settings.llm.max_new_tokens,
            "questions": str(config.questions), "docs": [str(d) for d in config.docs]}


def _check_resumable(out: Path, fingerprint: dict) -> None:
    path = out / "run.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise KbqaError(f"{out} holds a run with different settings ({', '.join(changed)}); "
                            "use a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fingerprint, ensure_ascii=False, indent=1), encoding="utf-8")


def run_eval(settings: Settings, config: EvalConfig, *, service: KbqaService | None = None,
             progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Evaluate every variant; writes answers.jsonl, metrics.json, report.md/.html; returns metrics."""
    llm, variants = with_default_reader(settings.llm.model, config.variants)
    if variants != config.variants:
        settings, config = settings.changed({"llm": llm}), replace(config, variants=variants)
    if not any(v.is_plain for v in config.variants):
        raise KbqaError("the variants must include 'plain': every comparison is against it")
    names = [v.name for v in config.variants]
    if len(set(names)) != len(names):
        raise KbqaError(f"variant names must be unique: {names}")
    questions, problems = read_questions(config.questions)
    questions = questions[: config.limit]
    _check_resumable(config.out, _fingerprint(settings, config))
    if service is None:
        # the KB lives in the output folder; the converted model stays in the user's cache
        from kbqa.llm.loading import resolve_llm

        llm = str(resolve_llm(settings.llm.model, settings.cache_dir, settings.llm.dtype))
        service = KbqaService(settings.changed({"home": config.out / "home",
                                                   "kb": "eval", "llm": llm}))
    folders, doc_problems = [], []
    for number, docs in enumerate(config.docs):
        folder, found = materialise_docs(docs, config.out / "docs" / str(number))
        folders.append(folder)
        doc_problems += found
    for problem in problems + doc_problems:
        log(problem)
    results = service.ingest(folders, progress=progress)
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        log(f"document skipped: {result.path}: {result.error}")

    retrieved = {q.qid: _retrieve(service, q)
                 for q in tqdm(questions, desc="retrieving", disable=not progress)}
    retrieval = {q.qid: retrieval_row(q, retrieved[q.qid]) for q in questions}
    cache = AnswerCache(config.out / "answers.jsonl")
    checks: dict[str, dict] = {}
    if not config.retrieval_only:
        models = service.variant_model
        checks = check_variants(models, config.variants)
        for name, check in checks.items():
            log(f"variant '{name}': adapters applied (max |Δlogit| {check['max_logit_diff']:.3g} "
                f"over {check['modules']} modules)")
        for variant in sorted(config.variants, key=lambda v: not v.is_plain):
            with models.activate(ModelVariant.of(variant.adapters)) as llm:
                # greedy and without the prefix cache: an answer must not depend on which
                # question came before it (runs resume, and orders differ between variants)
                greedy = llm.model_copy(update={"temperature": 0.0, "prefix_cache": None})
                _answer_all(greedy, service.settings, variant, questions, retrieved, cache, progress,
                            service.library())
    metrics = summarise(config.variants, questions, retrieval, cache,
                        answers=not config.retrieval_only)
    for name, check in checks.items():
        metrics[name]["verify"] = check
    metrics["input_problems"] = problems + doc_problems + [f"{r.path}: {r.error}" for r in failed]
    (config.out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=1),
                                             encoding="utf-8")
    from kbqa.evaluation.report import write_reports

    write_reports(config.out, metrics, questions, retrieved, cache, config.variants)
    return metrics


def _answer_all(llm: Any, settings: Settings, variant: Variant, questions: list[Question],
                retrieved: dict[str, Retrieved], cache: AnswerCache, progress: bool,
                library: Callable[[], Sequence[str]]) -> None:
    jobs = [(q, "answerable", retrieved[q.qid].context) for q in questions]
    jobs += [(q, "unanswerable", retrieved[q.qid].context_without_gold) for q in questions
             if retrieved[q.qid].context_without_gold is not None]
    for question, kind, context in tqdm(jobs, desc=f"answering [{variant.name}]",
                                        disable=not progress):
        if cache.get(variant.name, kind, question.qid):
            continue
        row = _answer(llm, settings, question, context, library)
        row.update(variant=variant.name, kind=kind, qid=question.qid, question=question.question,
                   chunk_ids=[d.metadata.get("chunk_id") for d in context],
                   scores=[d.metadata.get("score") for d in context])
        if kind == "answerable":
            row.update(em=exact_match(row["answer"], question.answers),
                       f1=f1_score(row["answer"], question.answers),
                       rouge_l=rouge_l(row["answer"], question.answers))
        cache.add(row)
