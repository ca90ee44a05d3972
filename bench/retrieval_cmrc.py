"""Retrieval benchmark on CMRC 2018: dense vs BM25 vs hybrid (+ rerank), and gate calibration.

Builds a knowledge base from the 713 dev + train passages (each written as "<doc_id>.txt" holding
"title\\n\\ntext") through the normal ingest pipeline, asks the questions of one split and prints,
per mode, hit@1 / hit@3 / hit@5 (an answer string appears in a retrieved chunk), MRR@5, gold-
document hit@5, the mean characters of the top-3 chunks (what a top-3 prompt carries) and query
latency. Then two calibrations: the BM25 coverage of the top-1 chunk (the `min_coverage` gate) and
the top-1 dense cosine, each with the question's gold document in the KB and with its chunks
excluded, which shows how well a threshold tells answerable from unanswerable questions.

Tune on `--split train` (2,513 questions over the train passages); dev (202) is the held-out check.

    python bench/retrieval_cmrc.py --kb-dir /tmp/cmrc-kb                # dev, KB built once, reused
    python bench/retrieval_cmrc.py --kb-dir /tmp/cmrc-kb --split train --limit 1000  # seeded sample
    python bench/retrieval_cmrc.py --kb-dir /tmp/cmrc-kb --baseline OLD.json  # before -> after
    python bench/retrieval_cmrc.py --rerank ~/models/bge-reranker-base  # + each mode reranked

Writes JSON to bench/results/retrieval_cmrc_<split>.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from machine_facts import with_machine
from kbqa.embeddings.embedders import load_embedded_default
from kbqa.retrieval.rerank import Reranker, load_reranker
from kbqa.retrieval.bm25 import bm25_index
from kbqa.retrieval.ranking import candidate_count, reciprocal_rank_fusion
from kbqa.retrieval.retriever import KnowledgeBaseRetriever
from kbqa.kb.store import KnowledgeBase

DATA = Path("/work/shared/eval/cmrc2018")
RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("dense", "bm25", "hybrid")
COSINE_THRESHOLDS = [round(0.20 + 0.05 * i, 2) for i in range(11)]
COVERAGE_THRESHOLDS = [round(0.10 + 0.05 * i, 2) for i in range(9)]
METRICS = ("hit@1", "hit@3", "hit@5", "mrr@5", "gold_doc_hit@5", "prompt_chars@3")


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_questions(split: str, limit: int | None, seed: int) -> list[dict]:
    """The split's questions, or a fixed-seed sample of `limit` of them (in file order)."""
    questions = read_jsonl(DATA / split / "questions.jsonl")
    if limit is None or limit >= len(questions):
        return questions
    keep = set(random.Random(seed).sample(range(len(questions)), limit))
    return [q for i, q in enumerate(questions) if i in keep]


def write_passages(folder: Path) -> int:
    """One .txt per passage; rewriting identical bytes keeps the KB's incremental ingest a no-op."""
    folder.mkdir(parents=True, exist_ok=True)
    passages = read_jsonl(DATA / "dev" / "docs.jsonl") + read_jsonl(DATA / "train" / "docs.jsonl")
    for doc in passages:
        path = folder / f"{doc['doc_id']}.txt"
        content = f"{doc['title']}\n\n{doc['text']}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
    return len(passages)


def build_kb(kb_dir: Path) -> tuple[KnowledgeBase, dict]:
    passages = write_passages(kb_dir / "docs")
    kb = KnowledgeBase.open_or_create(kb_dir / "kbs", "cmrc", load_embedded_default())
    started = time.perf_counter()
    results = kb.ingest([kb_dir / "docs"], progress=True)
    wall = time.perf_counter() - started
    stats = kb.last_ingest_stats
    counts = {status: sum(r.status == status for r in results)
              for status in ("added", "updated", "skipped", "failed")}
    ingest = {"passages": passages, "files": counts, "chunks_total": kb.chunk_count,
              "chunks_ingested": stats.chunks, "embedded": stats.embedded, "cached": stats.cached,
              "wall_s": wall, "parse_s": stats.parse_s, "split_s": stats.split_s,
              "embed_s": stats.embed_s, "index_s": stats.index_s + stats.commit_s,
              "chunks_per_s": stats.chunks / wall if stats.chunks else None}
    return kb, ingest


def doc_of_chunk(kb: KnowledgeBase) -> dict[int, str]:
    _, ids, _ = kb.chunk_texts()
    return {chunk_id: Path(doc.metadata["filename"]).stem
            for chunk_id, doc in kb.get_chunks(ids).items()}


def answer_rank(texts: list[str], answers: list[str]) -> int | None:
    for rank, text in enumerate(texts, start=1):
        if any(answer in text for answer in answers):
            return rank
    return None


def evaluate_mode(kb: KnowledgeBase, mode: str, questions: list[dict], k: int,
                  reranker: Reranker | None = None) -> dict:
    retriever = KnowledgeBaseRetriever(kb=kb, mode=mode, k=k, score_threshold=None,
                                       min_coverage=None, reranker=reranker)
    started = time.perf_counter()
    retriever.invoke("预热")  # builds the BM25 index, loads the embedder's first batch
    warmup = time.perf_counter() - started
    ranks, gold_hits, prompt_chars, latencies = [], 0, [], []
    for q in questions:
        started = time.perf_counter()
        docs = retriever.invoke(q["question"])
        latencies.append(time.perf_counter() - started)
        ranks.append(answer_rank([d.page_content for d in docs], q["answers"]))
        gold_hits += any(Path(d.metadata["filename"]).stem == q["doc_id"] for d in docs[:5])
        prompt_chars.append(sum(len(d.page_content) for d in docs[:3]))
    n = len(questions)
    return {"mode": mode + ("+rerank" if reranker else ""),
            **{f"hit@{at}": sum(r is not None and r <= at for r in ranks) / n for at in (1, 3, 5)},
            "mrr@5": sum(1 / r for r in ranks if r is not None and r <= 5) / n,
            "gold_doc_hit@5": gold_hits / n,
            "prompt_chars@3": statistics.fmean(prompt_chars),
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * float(np.quantile(latencies, 0.95)),
            "warmup_s": warmup}


def hybrid_candidates(kb: KnowledgeBase, vector: np.ndarray, question: str,
                      exclude: set[int], k: int) -> list[tuple[int, float]]:
    """The hybrid fused list (as kbqa.retrieval.search.search builds it) with dense cosines, minus `exclude`."""
    n = candidate_count(k)
    dense = [(i, s) for i, s in kb.search_vector(vector, n + len(exclude)) if i not in exclude][:n]
    lexical = bm25_index(kb)
    sparse = [(i, s) for i, s in lexical.top(lexical.scores(question), n + len(exclude))
              if i not in exclude][:n]
    fused = reciprocal_rank_fusion([[i for i, _ in dense], [i for i, _ in sparse]])
    cosines = kb.cosine_scores(vector, [i for i, _ in fused])
    return [(i, cosines[i]) for i, _ in fused]


def gold_chunks(chunk_doc: dict[int, str], questions: list[dict]) -> list[set[int]]:
    by_doc: dict[str, set[int]] = {}
    for chunk_id, doc in chunk_doc.items():
        by_doc.setdefault(doc, set()).add(chunk_id)
    return [by_doc.get(q["doc_id"], set()) for q in questions]


def calibrate_coverage(kb: KnowledgeBase, questions: list[dict], golds: list[set[int]]) -> dict:
    """Coverage of the top-1 BM25 chunk with and without the gold document, per threshold."""
    lexical = bm25_index(kb)
    with_gold, without_gold = [], []
    for q, gold in zip(questions, golds):
        ranked = [i for i, _ in lexical.top(lexical.scores(q["question"]), len(gold) + 1)]
        texts = kb.get_chunks(ranked)
        other = next((i for i in ranked if i not in gold), None)
        with_gold.append(lexical.coverage(q["question"], texts[ranked[0]].page_content)
                         if ranked else 0.0)
        without_gold.append(lexical.coverage(q["question"], texts[other].page_content)
                            if other is not None else 0.0)
    sweep = [{"threshold": t, "answerable_kept": float(np.mean(np.asarray(with_gold) >= t)),
              "unanswerable_rejected": float(np.mean(np.asarray(without_gold) < t))}
             for t in COVERAGE_THRESHOLDS]
    return {"auc_with_vs_without": auc(with_gold, without_gold), "sweep": sweep}


def calibrate_cosine(kb: KnowledgeBase, questions: list[dict], golds: list[set[int]],
                     k: int) -> dict:
    """Top-1 dense cosine with and without the gold document, and what each threshold would do."""
    _, ids, texts = kb.chunk_texts()
    text_of = dict(zip(ids, texts))
    with_gold, without_gold, per_question = [], [], []
    for q, gold in zip(questions, golds):
        vector = kb.query_vector(q["question"])
        hits = kb.search_vector(vector, len(gold) + 1)
        with_gold.append(hits[0][1])
        without_gold.append(next(s for i, s in hits if i not in gold))
        per_question.append((hybrid_candidates(kb, vector, q["question"], set(), k),
                             hybrid_candidates(kb, vector, q["question"], gold, k)))
    sweep = []
    for t in COSINE_THRESHOLDS:
        kept_hits, answerable_empty, unanswerable_empty = 0, 0, 0
        for q, (full, no_gold) in zip(questions, per_question):
            top = [i for i, cos in full if cos >= t][:k]
            answerable_empty += not top
            kept_hits += answer_rank([text_of[i] for i in top], q["answers"]) is not None
            unanswerable_empty += not any(cos >= t for _, cos in no_gold)
        n = len(questions)
        sweep.append({"threshold": t, "hybrid_hit@k": kept_hits / n,
                      "answerable_with_no_context": answerable_empty / n,
                      "unanswerable_rejected": unanswerable_empty / n})
    return {"top1_cosine_with_gold": quantiles(with_gold),
            "top1_cosine_without_gold": quantiles(without_gold),
            "auc_with_vs_without": auc(with_gold, without_gold), "sweep": sweep}


def quantiles(values: list[float]) -> dict[str, float]:
    qs = {"min": 0.0, "p05": 0.05, "p10": 0.10, "p25": 0.25, "p50": 0.5, "p75": 0.75,
          "p90": 0.90, "max": 1.0}
    return {name: float(np.quantile(values, q)) for name, q in qs.items()}


def auc(positives: list[float], negatives: list[float]) -> float:
    """P(a random answerable top-1 score > a random unanswerable one): 0.5 = no separation."""
    pos, neg = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def print_report(run: dict) -> None:
    ingest, k = run["ingest"], run["k"]
    print(f"\nIngest: {ingest['passages']} passages -> {ingest['chunks_total']} chunks; "
          f"files {ingest['files']}; this run embedded {ingest['embedded']}, "
          f"cached {ingest['cached']}")
    if ingest["chunks_ingested"]:
        print(f"  {ingest['chunks_per_s']:.1f} chunks/s over {ingest['wall_s']:.1f} s: "
              f"parse {ingest['parse_s']:.1f} s, split {ingest['split_s']:.1f} s, "
              f"embed {ingest['embed_s']:.1f} s, index+commit {ingest['index_s']:.1f} s")
    print(f"\nRetrieval, {run['questions']} CMRC {run['split']} questions, k={k}")
    print(f"{'mode':14} {'hit@1':>6} {'hit@3':>6} {'hit@5':>6} {'MRR@5':>6} {'gold@5':>7} "
          f"{'chars@3':>8} {'p50 ms':>7} {'p95 ms':>7}")
    for row in run["modes"]:
        print(f"{row['mode']:14} {row['hit@1']:6.3f} {row['hit@3']:6.3f} {row['hit@5']:6.3f} "
              f"{row['mrr@5']:6.3f} {row['gold_doc_hit@5']:7.3f} {row['prompt_chars@3']:8.0f} "
              f"{row['p50_ms']:7.1f} {row['p95_ms']:7.1f}")
    coverage = run["coverage"]
    print(f"\nCoverage gate on the bm25 top-1 chunk (AUC {coverage['auc_with_vs_without']:.3f})")
    print(f"{'thresh':>6} {'answerable kept':>16} {'unanswerable rejected':>22}")
    for row in coverage["sweep"]:
        print(f"{row['threshold']:6.2f} {row['answerable_kept']:16.3f} "
              f"{row['unanswerable_rejected']:22.3f}")
    cosine = run["cosine"]
    print("\nTop-1 dense cosine quantiles")
    for label, key in (("with gold doc", "top1_cosine_with_gold"),
                       ("without gold doc", "top1_cosine_without_gold")):
        print(f"  {label:17} " + " ".join(f"{n}={v:.3f}" for n, v in cosine[key].items()))
    print(f"  separation AUC = {cosine['auc_with_vs_without']:.3f} (0.5 = none, 1.0 = perfect)")
    print("\nDense-cosine threshold on hybrid retrieval")
    print(f"{'thresh':>6} {'hit@k':>6} {'answerable->no ctx':>19} {'unanswerable rejected':>22}")
    for row in cosine["sweep"]:
        print(f"{row['threshold']:6.2f} {row['hybrid_hit@k']:6.3f} "
              f"{row['answerable_with_no_context']:19.3f} {row['unanswerable_rejected']:22.3f}")


def print_comparison(before: dict, after: dict) -> None:
    """Before -> after per mode and metric, for runs on the same split and questions."""
    if (before["split"], before["questions"]) != (after["split"], after["questions"]):
        print(f"\n(baseline is {before['split']} x {before['questions']}: not comparable)")
        return
    print(f"\nBefore -> after ({after['split']}, {after['questions']} questions)")
    print(f"{'mode':14} " + " ".join(f"{m.replace('gold_doc_hit', 'gold'):>17}" for m in METRICS))
    old = {row["mode"]: row for row in before["modes"]}
    for row in after["modes"]:
        if row["mode"] not in old:
            continue
        cells = []
        for metric in METRICS:
            was, now = old[row["mode"]].get(metric), row[metric]
            digits = 0 if metric == "prompt_chars@3" else 3
            cells.append("n/a" if was is None else f"{was:.{digits}f} -> {now:.{digits}f}")
        print(f"{row['mode']:14} " + " ".join(f"{cell:>17}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kb-dir", type=Path, help="folder to build the KB in (reused if present)")
    parser.add_argument("--split", choices=("dev", "train"), default="dev")
    parser.add_argument("--limit", type=int, help="ask a fixed-seed sample of this many questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        help="JSON path (default bench/results/retrieval_cmrc_SPLIT.json)")
    parser.add_argument("--baseline", type=Path,
                        help="an earlier run's JSON (same split): print before -> after")
    parser.add_argument("--rerank", help="local cross-encoder folder: also measure each mode "
                                         "with it reranking the candidates")
    args = parser.parse_args()
    kb_dir = args.kb_dir or Path(tempfile.mkdtemp(prefix="kbqa-cmrc-"))
    out = args.out or RESULTS / f"retrieval_cmrc_{args.split}.json"
    kb, ingest = build_kb(kb_dir)
    questions = load_questions(args.split, args.limit, args.seed)
    modes = [evaluate_mode(kb, mode, questions, args.k) for mode in MODES]
    reranker = load_reranker(args.rerank)
    if reranker is not None:
        modes += [evaluate_mode(kb, mode, questions, args.k, reranker) for mode in MODES]
    golds = gold_chunks(doc_of_chunk(kb), questions)
    run = {"kb_dir": str(kb_dir), "split": args.split, "questions": len(questions),
           "limit": args.limit, "seed": args.seed, "k": args.k, "ingest": ingest, "modes": modes,
           "coverage": calibrate_coverage(kb, questions, golds),
           "cosine": calibrate_cosine(kb, questions, golds, args.k)}
    print_report(run)
    if args.baseline:
        print_comparison(json.loads(args.baseline.read_text(encoding="utf-8")), run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(with_machine(run), ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
