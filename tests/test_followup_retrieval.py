"""A follow-up question ("那一个月最多呢？") is searched in the conversation's context too, and a
question on a new topic keeps its own passages (kbqa.retrieval.followup, issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbqa.config import Settings
from kbqa.llm.local import LocalLLM
from kbqa.qa.chain import qa_chain
from kbqa.service import KbqaService
from tests.test_store import fake_embeddings

POLICIES = {
    "请假.md": "# 请假\n\n事假须提前三天申请，病假须提前半天申请。\n",
    "加班.md": "# 加班\n\n加班须提前一天申请。\n",
    "会议室.md": "# 会议室\n\n会议室须提前两小时申请。\n",
    "用车.md": "# 公务用车\n\n公务用车须提前四小时申请。\n",
    "远程办公.md": "# 远程办公制度\n\n员工每周最多可以远程办公2天，每月累计不超过8天。远程办公须提前一天在"
                   "人事系统中提交申请，由直属主管批准后生效；远程办公期间须保持在线，按时参加"
                   "部门例会，并在日报中记录当天完成的工作内容。\n",
    "报销.md": "# 差旅报销\n\n出差住宿费每晚最多报销500元，餐补每天100元。\n",
}
REMOTE = [("每周最多可以远程办公几天？", "每周最多远程办公2天。")]
FOLLOW_UP = "那一个月最多呢？"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> KbqaService:
    home = tmp_path_factory.mktemp("followup")
    docs = home / "docs"
    docs.mkdir()
    for name, text in POLICIES.items():
        (docs / name).write_text(text, encoding="utf-8")
    service = KbqaService(Settings(home=home, retrieval_mode="bm25"), embeddings=fake_embeddings())
    service.ingest([docs], "hr")
    return service


def _names(docs: list) -> list[str]:
    return [Path(d.metadata["source"]).name for d in docs]


def test_a_follow_up_finds_the_passage_of_the_conversations_topic(service: KbqaService) -> None:
    alone = _names(service.retrieve(FOLLOW_UP, "hr"))
    # what went wrong before: the policy is not found (here nothing passes the coverage gate,
    # so the follow-up was refused)
    assert "远程办公.md" not in alone
    in_context = _names(service.retrieve(FOLLOW_UP, "hr", history=REMOTE))
    assert in_context[0] == "远程办公.md"


def test_a_question_on_a_new_topic_keeps_its_own_best_passage(service: KbqaService) -> None:
    question = "出差住宿费每晚最多报销多少钱？"
    alone = _names(service.retrieve(question, "hr"))
    switched = _names(service.retrieve(question, "hr", history=REMOTE))
    assert alone[0] == switched[0] == "报销.md"


def test_history_questions_zero_searches_the_question_alone(service: KbqaService) -> None:
    settings = service.settings.model_copy(deep=True)
    settings.retrieval.history_questions = 0
    plain = KbqaService(settings, embeddings=service.embeddings)
    assert (_names(plain.retrieve(FOLLOW_UP, "hr", history=REMOTE))
            == _names(service.retrieve(FOLLOW_UP, "hr")))


def test_the_qa_chain_puts_the_follow_ups_passage_in_the_prompt(
        service: KbqaService, tiny_llm: LocalLLM) -> None:
    chain = qa_chain(Settings(grounding="off"), service.retriever("hr"), tiny_llm)
    result = chain.invoke({"question": FOLLOW_UP, "history": REMOTE})
    assert "远程办公.md" in _names(result["docs"])
    without = qa_chain(Settings(grounding="off"), service.retriever("hr"), tiny_llm, history=False)
    assert "远程办公.md" not in _names(
        without.invoke({"question": FOLLOW_UP, "history": REMOTE})["docs"])


def test_an_unanswerable_question_after_another_topic_is_still_refused_by_retrieval(
        service: KbqaService) -> None:
    """The earlier question's terms alone must not carry its passage through the gate."""
    question = "婚假有几天？"
    assert service.retrieve(question, "hr") == []
    assert service.retrieve(question, "hr", history=REMOTE) == []
