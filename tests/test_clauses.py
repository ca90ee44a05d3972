"""Answers read off the wrong clause of their sentence, off a sentence about something else, and
bare yes/no answers (kbqa.qa.clauses, kbqa.qa.grounding)."""

from __future__ import annotations

import pytest

from kbqa.qa.answer_kinds import polarity, yes_no
from kbqa.qa.clauses import off_topic, other_clause, question_words
from kbqa.qa.grounding import ground
from kbqa.qa.prompts import REFUSAL

# the R2 manual's maintenance section (bench/data/company_docs), as its chunk reads, and the
# name the chain gives it: the question's "R2" stands there
MANUAL = ["星河扫地机器人R2用户手册.docx · 三、维护保养"]
UPKEEP = ("三、维护保养\n主刷：建议每周清理一次缠绕的毛发，每6至12个月更换一次。边刷：建议每3至6个月"
          "更换一次。滤网：建议每2周清洗一次，每3个月更换一次，清洗后须完全晾干再装回。")
LEAVE = ("员工入职满一年后享有带薪年假：累计工龄满1年不满10年的，每年5天；满10年不满20年的，每年10天；"
         "满20年及以上的，每年15天。")
REMOTE = ("【三、远程办公】经直属主管批准，转正员工可申请远程办公。每周最多远程2天，每月不超过8天。"
          "试用期员工不得申请远程办公。")


def test_the_upkeep_files_sentence_is_the_manuals() -> None:
    from pathlib import Path

    manual = (Path(__file__).resolve().parents[1] / "bench" / "data" / "company_docs" / "documents"
              / "星河扫地机器人R2用户手册.docx.json").read_text(encoding="utf-8")
    assert "滤网：建议每2周清洗一次，每3个月更换一次" in manual


@pytest.mark.parametrize("draft, question, expected", [
    ("每2周", "R2的滤网多久更换一次？", "滤网：每3个月更换一次"),
    ("每3个月", "R2的滤网多久清洗一次？", "滤网：建议每2周清洗一次"),
    ("每6至12个月", "R2的主刷多久清理一次？", "主刷：建议每周清理一次缠绕的毛发"),
])
def test_a_quantity_from_the_sentences_other_clause_becomes_the_clause_asked_about(
        draft: str, question: str, expected: str) -> None:
    grounded = ground(draft, [UPKEEP], question, "span", names=MANUAL)
    assert (grounded.action, grounded.text) == ("span", expected)
    assert grounded.support is not None and grounded.support.wrong_clause
    assert ground(draft, [UPKEEP], question, "refuse", names=MANUAL).text == REFUSAL


@pytest.mark.parametrize("answer, question", [
    ("每3个月", "R2的滤网多久更换一次？"),
    ("每周", "R2的主刷多久清理一次？"),
    ("每3至6个月", "R2的边刷多久更换一次？"),  # one clause only: nothing to choose
])
def test_the_clause_asked_about_stands(answer: str, question: str) -> None:
    assert ground(answer, [UPKEEP], question, "span", names=MANUAL).action == "kept"


def test_a_clause_after_the_questions_own_condition_stands() -> None:
    """'满10年不满20年的，每年10天': the clause before the answer restates the question; the
    first clause holds more of its words (工龄, 年假) and a time too, and is still not the one."""
    question = "工龄满10年不满20年的员工，年假有几天？"
    assert ground("10天", [LEAVE], question, "span").action == "kept"
    assert other_clause("10天", LEAVE, question) is None


def test_only_a_question_that_asks_a_kind_of_quantity_moves_to_another_clause() -> None:
    """Encyclopedic sentences put an entity's facts clause after clause, and the question
    rephrases: without a kind to check, moving to the clause with more of its words loses right
    answers (CMRC dev, docs/benchmarks.md §20)."""
    text = "高畠车站是一位于日本山形县东置赐郡高畠町的铁路车站，由东日本旅客铁道（JR东日本）所经营。"
    assert other_clause("东日本旅客铁道", text, "高畠车站由哪个公司运营？") is None


FAQ_TAIL = ("签收后15天内出现质量问题的，可以申请换货。\n问：怎么开发票？\n答：我们提供电子发票。\n"
            "问：会员积分怎么使用？\n答：每消费1元累积1积分，下单时每100积分可抵扣1元。")


def test_a_number_from_a_sentence_about_something_else_is_refused() -> None:
    question = "会员积分的有效期是多久？"
    assert off_topic("15天", FAQ_TAIL, question)
    grounded = ground("15天", [FAQ_TAIL], question, "span")
    assert grounded.action == "refused" and grounded.support is not None
    assert grounded.support.off_topic
    # the sentence about the question's subject stands
    assert ground("1积分", [FAQ_TAIL], "每消费1元累积多少积分？", "span").action == "kept"


def test_the_subject_may_stand_in_the_sentences_just_before() -> None:
    text = "许国佐，又名许钦翼，号班王。自署百洲堂主人。揭阳县榕城（今榕城区）人。明末官员。"
    assert not off_topic("揭阳县榕城", text, "许国佐是什么地方人？")
    assert ground("揭阳县榕城", [text], "许国佐是什么地方人？", "span").action == "kept"
    # a question of one word judges nothing: one shared pair would be chance either way
    assert question_words("年假呢？") == ("年假",)
    assert not off_topic("15天", FAQ_TAIL, "年假呢？")


@pytest.mark.parametrize("question, asks", [
    ("试用期员工可以申请远程办公吗？", True), ("R2支持5GHz的Wi-Fi吗？", True),
    ("是否需要部门经理审批", True), ("可以寄到海外吗？运费多少？", True), ("运费多少？", False), ("R2的重量是多少？", False),
])
def test_yes_no_questions(question: str, asks: bool) -> None:
    assert yes_no(question) is asks


@pytest.mark.parametrize("answer, says", [
    ("否", False), ("不能。", False), ("没有", False), ("是", True), ("可以", True),
    ("不支持。R2仅支持2.4GHz", None), ("3天", None),
])
def test_bare_yes_and_no(answer: str, says: bool | None) -> None:
    assert polarity(answer) is says


def test_a_bare_yes_or_no_is_given_with_the_sentence_that_says_it() -> None:
    question = "试用期员工可以申请远程办公吗？"
    no = ground("否", [REMOTE], question, "span")
    assert (no.action, no.text) == ("kept", "否。试用期员工不得申请远程办公。")
    # a yes the sentence contradicts: only the sentence is given
    yes = ground("可以", [REMOTE], question, "span")
    assert (yes.action, yes.text) == ("kept", "试用期员工不得申请远程办公。")


def test_a_yes_or_no_from_another_companys_faq_is_refused() -> None:
    faq = "【上门安装收费吗？】上门安装费用为每台50元。"
    question = "知行办公上门安装收费吗？"
    other = ground("是", [faq], question, "span", names=["云杉数码常见问题.md · 上门安装收费吗？"],
                   titles=["云杉数码常见问题"])
    assert other.action == "refused" and other.support is not None and other.support.foreign
    own = ground("是", [faq], question, "span", names=["知行办公常见问题.md · 上门安装收费吗？"],
                 titles=["知行办公常见问题"])
    assert (own.action, own.text) == ("kept", "是。上门安装费用为每台50元。")


def test_an_echo_of_a_clock_question_becomes_the_sentence_with_the_time() -> None:
    faq = "人工客服几点下班？\n人工客服服务时间为每天9:00至21:00。"
    grounded = ground("人工客服几点下班？", [faq], "人工客服几点下班？", "span")
    assert (grounded.action, grounded.text) == ("span", "人工客服服务时间为每天9:00至21:00。")


def test_a_list_item_does_not_borrow_its_subject_from_the_item_before() -> None:
    rules = ("北辰健康员工福利与考勤制度\n第2条 年终奖于每年2月随工资一并发放。\n第3条 通讯补贴标准为每月250元。\n"
             "第4条 病假期间按本人工资的80%发放。")
    question = "北辰健康病假期间工资怎么发？"
    assert off_topic("每月250元", rules, question)  # 工资 stands only in the item before
    assert not off_topic("80%", rules, question)


def test_a_bare_no_to_a_yes_no_question_that_also_asks_how_much_gives_the_sentence() -> None:
    faq = "【可以寄到海外吗？运费多少？】支持海外配送，运费统一为每单280元。"
    grounded = ground("否", [faq], "可以寄到海外吗？运费多少？", "span")
    assert (grounded.action, grounded.text) == ("kept", "支持海外配送，运费统一为每单280元。")
    # a FAQ that says nothing of abroad does not answer it
    home = "【运费多少？】订单满99元包邮，不满99元收取运费10元。"
    assert ground("否", [home], "可以寄到海外吗？运费多少？", "span").action == "refused"


RULES = ("青禾科技员工福利与考勤制度\n第4条 加班至22:00以后，打车回家的费用可以凭票报销。\n"
         "第5条 公司每月为全职员工发放餐补750元。\n第8条 晚上工作到20:00以后的，可报销加班餐费。")


def test_a_time_from_the_passages_other_rule_becomes_the_rule_asked_about() -> None:
    question = "工作到几点以后可以报销加班餐？"
    grounded = ground("22:00以后", [RULES], question, "span")
    assert (grounded.action, grounded.text) == ("span", "第8条 晚上工作到20:00以后的，可报销加班餐费。")
    assert ground("20:00", [RULES], question, "span").action == "kept"
    # the taxi rule is the one asked about here
    assert ground("22:00", [RULES], "加班到几点以后打车可以报销？", "span").action == "kept"


def test_another_companys_rule_is_not_replaced_by_a_near_miss_of_the_asked_company() -> None:
    """The asked company has the meal rule, not the taxi rule: its meal rule shares fewer of
    the question's words than the taxi rule the draft came from, and is no answer."""
    theirs = "第2条 加班至22:30以后，打车回家的费用可以凭票报销。"
    ours = "第9条 晚上工作到20:00以后的，可报销加班餐费。"
    titles = ["白鹭户外员工福利与考勤制度", "禾丰农机员工福利与考勤制度"]
    refused = ground("22:30", [theirs, ours], "禾丰农机加班到几点以后打车可以报销？", "span",
                     titles=titles)
    assert refused.action == "refused" and refused.support is not None
    assert refused.support.foreign == ("禾丰农机",)
