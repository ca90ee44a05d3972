"""Evaluation page (AppTest): open a report folder, or say clearly what it lacks."""

from __future__ import annotations

import json
from pathlib import Path

from kbqa.evaluation.reader import read_eval_report
from tests.cmrc_sample import cmrc_sample
from tests.ui_support import DONOR_ADAPTER, app_test, home, texts, write_config

METRICS = {
    "plain": {"retrieval": {"hit@1": 0.8, "hit@5": 0.9, "mrr": 0.85},
              "answer": {"em": 0.3, "f1": 0.5, "rouge_l": 0.45, "refusal_rate": 0.2}, "n": 2},
    "fused": {"retrieval": {"hit@1": 0.8, "hit@5": 0.9, "mrr": 0.85},
              "answer": {"em": 0.4, "f1": 0.6, "rouge_l": 0.55, "refusal_rate": 0.1}, "n": 2},
    "comparisons": {},
}
ANSWERS = [{"variant": v, "kind": "answerable", "qid": q, "answer": f"{v}-{q}"}
           for v in ("plain", "fused") for q in ("q1", "q2")]


def _report(folder: Path) -> Path:
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
    (folder / "answers.jsonl").write_text(
        "\n".join(json.dumps(row) for row in ANSWERS) + "\n{broken", encoding="utf-8")
    (folder / "report.html").write_text("<html><body><h1>kbqa report</h1></body></html>",
                                        encoding="utf-8")
    return folder


def _open(folder: Path):
    at = app_test()
    at.query_params["page"] = "evaluation"
    at.run()
    at.text_input(key="eval_folder").input(str(folder)).run()
    assert not at.exception
    return at


def test_report_folder_is_shown(tmp_path: Path) -> None:
    at = _open(_report(tmp_path / "run"))
    metrics = at.table[0].value
    assert list(metrics["variant"]) == ["plain", "fused"]
    assert list(metrics["f1"]) == [0.5, 0.6]
    side = at.table[1].value
    assert list(side["plain"]) == ["plain-q1", "plain-q2"] and list(side["fused"]) == ["fused-q1",
                                                                                      "fused-q2"]
    assert "1 unreadable line(s) skipped" in texts(at)
    assert not at.error


def test_empty_folder_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    at = _open(tmp_path / "empty")
    shown = texts(at)
    assert "has no metrics.json" in shown and "has no answers.jsonl" in shown
    assert "has no report.html" in shown
    assert "this folder holds no evaluation report" in shown


def test_reader_pivots_answers(tmp_path: Path) -> None:
    report = read_eval_report(_report(tmp_path / "run"))
    assert report.variants == ["plain", "fused"]
    assert report.html and "kbqa report" in report.html
    assert report.side_by_side()[0] == {"qid": "q1", "plain": "plain-q1", "fused": "fused-q1"}


def test_a_small_run_from_the_page_opens_its_report(tiny_llm_folder: Path, tmp_path: Path) -> None:
    write_config(tiny_llm_folder)
    questions, docs = cmrc_sample(tmp_path / "data", 2)
    at = app_test()
    at.query_params["page"] = "evaluation"
    at.run()
    at.text_input(key="eval_questions").input(str(questions))
    at.text_input(key="eval_docs").input(str(docs))
    donor = next(label for label in at.multiselect(key="eval_variants").options
                 if DONOR_ADAPTER.name in label)
    at.multiselect(key="eval_variants").select(donor)
    at.number_input(key="eval_limit").set_value(2)
    at.text_input(key="eval_out").input(str(tmp_path / "run"))
    at.button(key="eval_run").click().run(timeout=600)
    assert not at.exception and not at.error, texts(at)
    assert at.text_input(key="eval_folder").value == str(tmp_path / "run")
    metrics = at.table[0].value
    assert list(metrics["variant"]) == ["plain", DONOR_ADAPTER.name]
    # 2 variants × 2 questions × (answerable + gold hidden)
    assert len((tmp_path / "run" / "answers.jsonl").read_text().splitlines()) == 8


def test_a_run_with_a_bad_questions_file_says_why(tmp_path: Path) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    at = app_test()
    at.query_params["page"] = "evaluation"
    at.run()
    at.text_input(key="eval_questions").input(str(bad))
    at.text_input(key="eval_docs").input(str(tmp_path))
    at.button(key="eval_run").click().run()
    assert "holds no valid questions" in texts(at)
    assert not (home() / "eval" / "ui-run").exists()  # nothing was started


def test_feedback_given_in_chat_is_offered_for_export(tmp_path: Path) -> None:
    from kbqa.conversations import ConversationStore

    store = ConversationStore(home() / "conversations.sqlite3")
    conversation = store.create("default")
    turn = store.add_turn(conversation.id, "年假几天？", "plain")
    turn.answer, turn.state = "十天", "done"
    store.save_turn(turn)
    at = app_test()
    at.query_params["page"] = "evaluation"
    at.run()
    assert "no thumbs-up or thumbs-down given in Chat yet" in texts(at)
    store.rate(turn.id, 1)
    at.run()
    [button] = at.get("download_button")
    assert "1 赞 up, 0 踩 down" in button.proto.label
