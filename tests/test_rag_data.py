"""RAG training examples: retrieved passages as the app shows them, refusals without the answer."""

from __future__ import annotations

from langchain_core.documents import Document

from kbqa.adapters.rag_data import RagQuestion, rag_examples
from kbqa.qa.prompts import REFUSAL

PASSAGES = {
    "年假几天？": ["员工每年有10天年假。", "年假须提前申请。", "病假需要证明。", "加班可以调休。"],
    "餐补多少？": ["餐补每天25元。", "交通补贴每月300元。", "住房补贴另行规定。", "通讯费可报销。"],
    "谁审批？": ["请假流程见系统。", "考勤每月统计。", "迟到三次扣款。", "年假须提前申请。"],
}
ANSWERS = {"年假几天？": ("10天",), "餐补多少？": ("25元",), "谁审批？": ("部门总监",)}


def retrieve(question: str) -> list[Document]:
    return [Document(page_content=text, metadata={"filename": "手册.md"})
            for text in PASSAGES[question]]


def test_answerable_examples_hold_the_answer_and_refusals_never_do():
    questions = [RagQuestion(q, ANSWERS[q]) for q in PASSAGES] * 40
    examples, mix = rag_examples(questions, retrieve, top_k=3, refusal_share=0.5, seed=1)
    assert mix.answerable + mix.refusals == len(examples)
    assert 30 <= mix.refusals <= 90 and mix.answerable > 0  # about half of the 120 drawn
    # "谁审批？" has no passage with its answer: never answerable, refusal only
    assert mix.skipped_no_gold > 0
    for example in examples:
        question = example.prompt.rsplit("问题：", 1)[1].split("\n")[0]
        shown = [text for text in PASSAGES[question] if text in example.prompt]
        assert len(shown) == 3  # top_k passages, as the app shows them
        if example.answer == REFUSAL:
            assert not any(a in example.prompt.split("问题：")[0] for a in ANSWERS[question])
        else:
            assert example.answer in example.prompt and question != "谁审批？"


def test_no_refusals_when_the_share_is_zero():
    questions = [RagQuestion(q, ANSWERS[q]) for q in ("年假几天？", "餐补多少？")] * 5
    examples, mix = rag_examples(questions, retrieve, refusal_share=0.0)
    assert mix.refusals == 0 and {e.answer for e in examples} == {"10天", "25元"}


def test_cli_trains_on_what_kbqa_retrieves(tiny_llm_folder, tmp_path, capsys):
    import json

    from kbqa.cli import main

    data = tmp_path / "data"
    data.mkdir()
    docs = [{"doc_id": "d1", "title": "员工手册", "text": "员工每年有10天带薪年假。年假须提前三天申请。"},
            {"doc_id": "d2", "title": "补贴", "text": "公司为员工提供每天25元的餐费补贴。交通补贴另计。"}]
    questions = [{"question": "员工每年有几天带薪年假？", "answers": ["10天"], "doc_id": "d1"},
                 {"question": "每天的餐费补贴是多少？", "answers": ["25元"], "doc_id": "d2"}]
    for name, rows in (("docs.jsonl", docs), ("questions.jsonl", questions)):
        (data / name).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows),
                                 encoding="utf-8")
    out = tmp_path / "adapter"
    assert main(["adapters", "train", "--model", str(tiny_llm_folder), "--rag", str(data),
                 "--out", str(out), "--steps", "1", "--rank", "2", "--alpha", "4",
                 "--max-length", "256", "--refusal-share", "0"]) == 0
    printed = capsys.readouterr().out
    assert "RAG examples: 2 answerable, 0 refusals" in printed
    assert (out / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint"]  # no KB left in it
    card = (out / "README.md").read_text(encoding="utf-8")  # kbqa's card, not peft's template
    assert "More Information Needed" not in card and str(tiny_llm_folder) not in card.split(
        "## Command")[0]
    assert "2 answerable, 0 refusals" in card and "- steps: 1" in card
    assert "kbqa adapters train --model" in card and "--refusal-share 0" in card
