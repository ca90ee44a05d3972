"""Follow-up retrieval: is the answer among the prompt's passages when the question leans on the
conversation, and does a conversation cost a question on a new topic anything?

    python bench/followup_retrieval.py [--history-questions 0 1 2] [--cmrc-limit N]

Retrieval only (no model): the share of questions with a gold answer inside the top_k passages
(the prompt's; default settings otherwise), for each `retrieval.history_questions` value; for
the company set's unanswerable questions, the share that retrieval refuses outright (nothing
passes the coverage gate, so the model is not asked).
- company docs (bench/data/company_docs): its follow-up questions with their recorded history;
  every other answerable question after an unrelated turn (a question on another document, drawn
  with a fixed seed), and without history.
- CMRC 2018 dev (KB = dev + train passages): every question after another question on the same
  passage (a conversation that stays on topic), after one on another passage (topic switch), and
  without history.
Writes bench/reports/followup/followup.json with the machine facts.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from company_docs import DATA as COMPANY
from company_docs import is_right, write_documents
from machine_facts import with_machine

from kbqa.config import Settings
from kbqa.embeddings.embedders import EncoderEmbeddings, load_embedded_default
from kbqa.service import KbqaService

CMRC = Path(__file__).resolve().parents[2] / "shared" / "eval" / "cmrc2018"
REPORTS = Path(__file__).parent / "reports" / "followup"
Turn = tuple[str, str]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _share(hits: list[bool]) -> dict[str, float | int]:
    return {"n": len(hits), "gold_in_prompt": round(sum(hits) / max(len(hits), 1), 4),
            "hits": sum(hits)}


@functools.cache
def _embeddings() -> EncoderEmbeddings:
    return load_embedded_default()


def _service(home: Path, kb: str, paths: list[Path], history_questions: int) -> KbqaService:
    service = KbqaService(Settings(home=home, history_questions=history_questions),
                          embeddings=_embeddings())
    if kb not in service.list_knowledge_bases():
        service.ingest(paths, kb)
    return service


def _unrelated(rng: random.Random, pool: list[dict], key: str, item: dict) -> Turn:
    other = rng.choice([o for o in pool if o[key] != item[key]])
    return (other["question"], "")


def company(home: Path, history_questions: int) -> dict[str, dict]:
    docs = home / "company-docs"
    if not docs.is_dir():
        docs.mkdir()
        write_documents(docs)
    service = _service(home, "company", sorted(docs.iterdir()), history_questions)
    every = _jsonl(COMPANY / "questions.jsonl")
    questions = [q for q in every if q["answerable"]]
    unanswerable = [q for q in every if not q["answerable"]]
    follow_ups = [q for q in questions if q.get("history")]
    standalone = [q for q in questions if not q.get("history")]
    rng = random.Random(0)

    def hit(q: dict, history: list[Turn] | None) -> bool:
        passages = service.retrieve(q["question"], "company", history=history)
        return is_right(" ".join(d.page_content for d in passages), q["answers"])

    return {
        "follow_ups": _share([hit(q, [tuple(t) for t in q["history"]]) for q in follow_ups]),
        "after_unrelated_turn": _share([hit(q, [_unrelated(rng, standalone, "source", q)])
                                        for q in standalone]),
        "no_history": _share([hit(q, None) for q in standalone]),
        # unanswerable: the share that retrieval alone refuses (nothing passes the gate), which a
        # conversation must not undo by bringing in its own topic's passages
        "unanswerable_gate_refuses_no_history": _share(
            [not service.retrieve(q["question"], "company") for q in unanswerable]),
        "unanswerable_gate_refuses_after_unrelated_turn": _share(
            [not service.retrieve(q["question"], "company",
                                  history=[(rng.choice(standalone)["question"], "")])
             for q in unanswerable]),
    }


def cmrc(home: Path, history_questions: int, limit: int | None) -> dict[str, dict]:
    docs = home / "cmrc-docs"
    if not docs.is_dir():
        docs.mkdir()
        for doc in _jsonl(CMRC / "dev" / "docs.jsonl") + _jsonl(CMRC / "train" / "docs.jsonl"):
            (docs / f"{doc['doc_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}",
                                                       encoding="utf-8")
    service = _service(home, "cmrc", [docs], history_questions)
    every = _jsonl(CMRC / "dev" / "questions.jsonl")
    questions = every[:limit]
    rng = random.Random(0)

    def hit(q: dict, history: list[Turn] | None) -> bool:
        passages = service.retrieve(q["question"], "cmrc", history=history)
        return any(a in d.page_content for d in passages for a in q["answers"])

    def same_passage(q: dict) -> list[Turn] | None:
        others = [o for o in every if o["doc_id"] == q["doc_id"] and o["qid"] != q["qid"]]
        return [(rng.choice(others)["question"], "")] if others else None

    on_topic = [(q, same_passage(q)) for q in questions]
    return {
        "after_same_passage_turn": _share([hit(q, h) for q, h in on_topic if h]),
        "after_unrelated_turn": _share([hit(q, [_unrelated(rng, every, "doc_id", q)])
                                        for q in questions]),
        "no_history": _share([hit(q, None) for q in questions]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history-questions", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cmrc-limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kbqa-followup-") as folder:
        home = Path(folder)
        sets: dict[str, Callable[[int], dict]] = {
            "company_docs": lambda n: company(home, n),
            "cmrc_dev": lambda n: cmrc(home, n, args.cmrc_limit)}
        for n in args.history_questions:
            results[f"history_questions={n}"] = {name: run(n) for name, run in sets.items()}
    print(f"{'setting':22} {'set':13} {'condition':46} share")
    for setting, by_set in results.items():
        for name, conditions in by_set.items():
            for condition, figures in conditions.items():
                print(f"{setting:22} {name:13} {condition:46} {figures['gold_in_prompt']:.3f} "
                      f"({figures['hits']}/{figures['n']})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "followup.json").write_text(
        json.dumps(with_machine({"results": results}), ensure_ascii=False, indent=1),
        encoding="utf-8")


if __name__ == "__main__":
    main()
