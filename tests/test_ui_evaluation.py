"""Evaluation page (AppTest): open a report folder, or say clearly what it lacks."""

from __future__ import annotations

import json
from pathlib import Path

from kbqa.evaluation.reader import read_eval_report
from kbqa.ui.evaluation import found_inputs
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
    assert list(metrics["变体"]) == ["plain", "fused"]
    assert list(metrics["f1"]) == [0.5, 0.6]
    side = at.table[1].value
    assert list(side["plain"]) == ["plain-q1", "plain-q2"] and list(side["fused"]) == ["fused-q1",
                                                                                      "fused-q2"]
    assert "跳过了 1 行无法读取的内容" in texts(at)
    assert not at.error


def test_empty_folder_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    at = _open(tmp_path / "empty")
    shown = texts(at)
    assert "中没有 metrics.json" in shown and "中没有 answers.jsonl" in shown
    assert "中没有 report.html" in shown
    assert "这个目录里没有评测报告" in shown


def test_reader_pivots_answers(tmp_path: Path) -> None:
    report = read_eval_report(_report(tmp_path / "run"))
    assert report.variants == ["plain", "fused"]
    assert report.html and "kbqa report" in report.html
    assert report.side_by_side()[0] == {"qid": "q1", "plain": "plain-q1", "fused": "fused-q1"}


def _evaluation_page():
    at = app_test()
    at.query_params["page"] = "evaluation"
    return at.run()


def test_a_small_run_from_uploaded_files_opens_its_report(tiny_llm_folder: Path,
                                                         tmp_path: Path) -> None:
    write_config(tiny_llm_folder)
    questions, docs = cmrc_sample(tmp_path / "data", 2)
    # the questions as a JSON array (the page writes it out as JSONL for kbqa eval)
    rows = [json.loads(line) for line in questions.read_text(encoding="utf-8").splitlines()]
    at = _evaluation_page()
    assert at.radio(key="eval_questions_source").value == "upload"  # the default: no typed path
    at.file_uploader(key="eval_questions_file").set_value(
        ("问题.json", json.dumps(rows, ensure_ascii=False).encode("utf-8"), "application/json"))
    at.file_uploader(key="eval_docs_file").set_value(
        [("docs.jsonl", docs.read_bytes(), "application/jsonl")])
    donor = next(option for option in at.multiselect(key="eval_variants").options
                 if DONOR_ADAPTER.name in option)
    at.multiselect(key="eval_variants").select(donor)
    at.number_input(key="eval_limit").set_value(2)
    at.text_input(key="eval_name").input("小评测")
    at.button(key="eval_run").click().run(timeout=600)
    assert not at.exception and not at.error, texts(at)
    run = home() / "eval" / "小评测"
    assert at.selectbox(key="eval_report").value == str(run)  # the new report is opened
    metrics = at.table[0].value
    assert list(metrics["变体"]) == ["plain", DONOR_ADAPTER.name]
    # 2 variants × 2 questions × (answerable + gold hidden)
    assert len((run / "answers.jsonl").read_text().splitlines()) == 8
    # the uploaded files were kept under KBQA_HOME, the questions as JSONL; they can be picked
    [kept] = (home() / "eval" / "inputs").glob("questions-*/questions.jsonl")
    assert [json.loads(line) for line in kept.read_text(encoding="utf-8").splitlines()] == rows
    found_questions, found_docs = found_inputs(home())
    assert kept in found_questions and run / "answers.jsonl" not in found_questions
    assert any(p.name == "docs.jsonl" for p in found_docs)


def test_a_bad_uploaded_questions_file_says_why(tmp_path: Path) -> None:
    at = _evaluation_page()
    at.file_uploader(key="eval_questions_file").set_value(("q.jsonl", b"not json\n",
                                                           "application/jsonl"))
    at.file_uploader(key="eval_docs_file").set_value([("a.txt", "年假十天".encode(), "text/plain")])
    at.button(key="eval_run").click().run()
    assert "holds no valid questions" in texts(at)
    assert not (home() / "eval" / "ui-run").exists()  # nothing was started
    at.file_uploader(key="eval_questions_file").set_value(("q.json", b"{broken",
                                                           "application/json"))
    at.button(key="eval_run").click().run()
    assert "q.json 不是有效的问题文件" in texts(at)


def test_questions_picked_under_the_data_folder_or_typed_as_a_path(tmp_path: Path) -> None:
    bad = home() / "data" / "q.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text("not json\n", encoding="utf-8")
    (home() / "kb" / "x").mkdir(parents=True)
    (home() / "kb" / "x" / "chunks.jsonl").write_text("{}\n", encoding="utf-8")
    at = _evaluation_page()
    at.radio(key="eval_questions_source").set_value("home").run()
    picker = at.selectbox(key="eval_questions_pick")
    assert picker.options == ["data/q.jsonl"]  # knowledge bases' own files are not offered
    picker.select(str(bad))
    at.radio(key="eval_docs_source").set_value("path").run()
    at.text_input(key="eval_docs").input(str(tmp_path))
    at.button(key="eval_run").click().run()
    assert "holds no valid questions" in texts(at)
    # typed (the advanced choice): the same file, the same answer
    at.radio(key="eval_questions_source").set_value("path").run()
    at.text_input(key="eval_questions").input(str(bad))
    at.button(key="eval_run").click().run()
    assert "holds no valid questions" in texts(at)
    assert not (home() / "eval" / "ui-run").exists()


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
    assert "问答页还没有人点赞或点踩" in texts(at)
    store.rate(turn.id, 1)
    at.run()
    [button] = at.get("download_button")
    assert "1 赞，0 踩" in button.proto.label
