"""Run an evaluation: one knowledge base, one retrieval per question, every variant answers.

Retrieval is done once and shared, so variants differ only in the model. Each
question is also asked with its gold document hidden (when it names one): the
right answer is then the refusal, which measures refusal instead of assuming it.
Answers are appended to answers.jsonl as they come, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda
from tqdm import tqdm

from kbqa.chain import build_qa_chain, is_refusal
from kbqa.config import Settings
from kbqa.errors import AdapterError, KbqaError
from kbqa.evaluation.data import Question, Variant, materialise_docs, parse_variant, read_questions
from kbqa.evaluation.scoring import summarise
from kbqa.metrics import exact_match, f1_score, rouge_l
from kbqa.prompts import build_prompt
from kbqa.service import KbqaService

__all__ = ["EvalConfig", "Variant", "parse_variant", "read_questions", "run_eval"]

PROBE = "根据已知信息回答：公司成立于哪一年？"
MIN_LOGIT_CHANGE = 1e-3
RETRIEVE_K = 5


@dataclass(frozen=True)
class EvalConfig:
    questions: Path
    docs: Path
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
    top_k = service.settings.top_k
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


def max_logit_change(model: Any, tokenizer: Any, probe: str = PROBE) -> float:
    """Largest |logit| difference between the adapted and the plain model on a probe prompt."""
    import torch

    inputs = tokenizer(probe, return_tensors="pt")
    with torch.inference_mode():
        adapted = model(**inputs).logits.float()
        with model.disable_adapter():
            plain = model(**inputs).logits.float()
    return float((adapted - plain).abs().max())


def _variant_llm(base: Any, variant: Variant) -> tuple[Any, Callable[[], None]]:
    """The LLM for a variant, and how to restore the base model afterwards (no reload)."""
    if variant.is_plain:
        return base, lambda: None
    from kbqa.fusion import load_adapters

    peft_model, reports = load_adapters(base.model, list(variant.adapters))
    change = max_logit_change(peft_model, base.tokenizer)
    if change <= MIN_LOGIT_CHANGE:
        peft_model.unload()
        raise AdapterError(f"variant '{variant.name}' is identical to the plain model "
                           f"(max logit change {change:.2e} on a probe prompt): its adapter "
                           "applies nothing, so comparing it would be meaningless")
    llm = base.model_copy(update={"model": peft_model,
                                  "adapters": [report.folder for report in reports]})
    return llm, lambda: peft_model.unload()


def _answer(llm: Any, settings: Settings, question: Question, context: list[Document]) -> dict:
    chain = build_qa_chain(RunnableLambda(lambda _: context), llm,
                           build_prompt(settings.prompt_template), history_turns=0)
    start = time.perf_counter()
    answer = chain.invoke({"question": question.question})["answer"].strip()
    latency = time.perf_counter() - start
    tokens = len(llm.tokenizer(answer)["input_ids"]) if context else 0
    return {"answer": answer, "latency_s": latency, "tokens": tokens,
            "refused": is_refusal(answer)}


def _fingerprint(settings: Settings, config: EvalConfig) -> dict:
    return {"llm": settings.llm, "top_k": settings.top_k, "mode": settings.retrieval_mode,
            "min_coverage": settings.min_coverage, "prompt": settings.prompt_template,
            "max_new_tokens": settings.max_new_tokens, "temperature": settings.temperature,
            "questions": str(config.questions), "docs": str(config.docs)}


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
    if not any(v.is_plain for v in config.variants):
        raise KbqaError("the variants must include 'plain': every comparison is against it")
    names = [v.name for v in config.variants]
    if len(set(names)) != len(names):
        raise KbqaError(f"variant names must be unique: {names}")
    questions, problems = read_questions(config.questions)
    questions = questions[: config.limit]
    _check_resumable(config.out, _fingerprint(settings, config))
    service = service or KbqaService(settings.model_copy(update={"home": config.out / "home",
                                                                  "kb": "eval"}))
    folder, doc_problems = materialise_docs(config.docs, config.out / "docs")
    for problem in problems + doc_problems:
        log(problem)
    results = service.ingest([folder], progress=progress)
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        log(f"document skipped: {result.path}: {result.error}")

    retrieved = {q.qid: _retrieve(service, q)
                 for q in tqdm(questions, desc="retrieving", disable=not progress)}
    retrieval = {q.qid: retrieval_row(q, retrieved[q.qid]) for q in questions}
    cache = AnswerCache(config.out / "answers.jsonl")
    if not config.retrieval_only:
        for variant in sorted(config.variants, key=lambda v: not v.is_plain):
            llm, restore = _variant_llm(service.llm, variant)
            try:
                _answer_all(llm, service.settings, variant, questions, retrieved, cache, progress)
            finally:
                restore()
    metrics = summarise(config.variants, questions, retrieval, cache,
                        answers=not config.retrieval_only)
    metrics["input_problems"] = problems + doc_problems + [f"{r.path}: {r.error}" for r in failed]
    (config.out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=1),
                                             encoding="utf-8")
    from kbqa.evaluation.report import write_reports

    write_reports(config.out, metrics, questions, retrieved, cache, config.variants)
    return metrics


def _answer_all(llm: Any, settings: Settings, variant: Variant, questions: list[Question],
                retrieved: dict[str, Retrieved], cache: AnswerCache, progress: bool) -> None:
    jobs = [(q, "answerable", retrieved[q.qid].context) for q in questions]
    jobs += [(q, "unanswerable", retrieved[q.qid].context_without_gold) for q in questions
             if retrieved[q.qid].context_without_gold is not None]
    for question, kind, context in tqdm(jobs, desc=f"answering [{variant.name}]",
                                        disable=not progress):
        if cache.get(variant.name, kind, question.qid):
            continue
        row = _answer(llm, settings, question, context)
        row.update(variant=variant.name, kind=kind, qid=question.qid,
                   chunk_ids=[d.metadata.get("chunk_id") for d in context],
                   scores=[d.metadata.get("score") for d in context])
        if kind == "answerable":
            row.update(em=exact_match(row["answer"], question.answers),
                       f1=f1_score(row["answer"], question.answers),
                       rouge_l=rouge_l(row["answer"], question.answers))
        cache.add(row)


def variant_summary(variant: Variant) -> dict:
    return {k: [str(p) for p in v] if k == "adapters" else v for k, v in asdict(variant).items()}
