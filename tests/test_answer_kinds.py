"""The answer-kind check: what a question asks for, and answers that give another kind."""

from __future__ import annotations

import pytest

from kbqa.qa.answer_kinds import asked_kinds, clause_of_kind, mismatch, quantities, with_unit
from kbqa.qa.grounding import ground

POLICY = """第一条 员工入职满一年后享有带薪年假。
第二条 年假需提前3个工作日在系统中申请，部门经理审批。
第三条 密码每90天必须更换一次，新密码不得与最近5次使用过的密码相同。
第四条 付款成功后48小时内发货，新疆、西藏等偏远地区除外。"""

SPECS = """| 型号 | 最大吸力 | 重量 | 建议零售价 |
| --- | --- | --- | --- |
| R1 | 2700Pa | 3.2千克 | 1999元 |
| R2 | 4000Pa | 3.8千克 | 2999元 |"""


@pytest.mark.parametrize("question, kinds", [
    ("年假需要提前几天申请？", {"time"}),
    ("多少积分可以抵扣1元？", {"points"}),  # 多少 + its unit wins over the 元 it mentions
    ("R2多少钱？", {"money"}),
    ("R2的建议零售价是多少？", {"money"}),
    ("R2的重量是多少？", {"weight"}),
    ("R2机身有多重？", {"weight"}),
    ("试用期多长？", {"length", "time"}),
    ("培训要多长时间？", {"time"}),
    ("R2的最大吸力是多少？", {"pressure"}),
    ("公司有多少名员工？", {"count"}),
    # no kind: a topic noun not asked as an amount, a bare 是多少, a person
    ("病假期间工资按什么标准发放？", set()),
    ("R2的型号是多少？", set()),
    ("连续休假超过5天需要谁审批？", set()),
])
def test_the_kind_a_question_asks_for(question: str, kinds: set[str]) -> None:
    assert asked_kinds(question) == kinds


def test_quantities_read_units_clocks_chinese_numerals_and_magnitudes() -> None:
    assert quantities("门店9:30开门，两天内回复，预算3万元，吸力4000Pa") == [
        ("9:30", "", "time"), ("2", "天", "time"), ("3", "万元", "money"),
        ("4000", "pa", "pressure")]
    assert quantities("支持5G网络") == []  # '5g' is no gram: g is not read as a unit
    assert quantities("续航120mins") == []  # a longer Latin word is not the unit 'min'


@pytest.mark.parametrize("answer, question, why", [
    ("1999元", "R2的最大吸力是多少？", "asks pressure, gives money"),
    ("300元", "多少积分可以抵扣1元？", "asks points, gives money"),
    ("2.4GHz", "R2的吸尘口宽度是多少？", "asks length, gives frequency"),
    ("65℃", "D16 Pro的额定压力是多少？", "asks pressure, gives temperature"),
    ("2100W", "D19的额定压力是多少？", "asks pressure, gives power"),  # a spec table's watts
    ("新密码不得与最近5次使用过的密码相同。", "密码多久必须更换一次？", "asks time, gives count"),
    ("发货后可在订单详情中查看物流单号。", "付款后多久发货？", "asks a duration, says no time"),
    ("激光雷达", "R2的激光雷达是什么型号？", "repeats the question"),
])
def test_answers_of_another_kind_are_caught(answer: str, question: str, why: str) -> None:
    assert mismatch(answer, question) == why


@pytest.mark.parametrize("answer, question", [
    ("4000Pa", "R2的最大吸力是多少？"),
    ("100积分", "多少积分可以抵扣1元？"),
    ("本人基本工资的80%", "病假期间工资的标准是多少？"),  # a share answers how much money
    ("每周", "R2的主刷多久清理一次？"),                    # a time word without a number
    ("立即发货", "付款后多久发货？"),
    ("3个月", "试用期多长？"),
    ("人力资源部", "连续休假超过5天需要谁审批？"),          # no kind asked: not judged
    ("1999元", "R2的型号是多少？"),                       # a bare 是多少 asks no kind
    ("可以", "试用期员工可以申请远程办公吗？"),           # not a wh-question: an echo may answer
])
def test_answers_of_the_asked_kind_pass(answer: str, question: str) -> None:
    assert mismatch(answer, question) is None


def test_the_replacement_clause_is_the_one_about_the_question_with_the_asked_kind() -> None:
    clauses = [line for line in POLICY.splitlines()]
    assert clause_of_kind("密码多久必须更换一次？", clauses) == clauses[2]
    assert clause_of_kind("付款后多久发货？", clauses) == clauses[3]
    # shares too little with the question: no clause
    assert clause_of_kind("会员积分的有效期是多久？", clauses) is None


def test_a_bare_number_gets_the_unit_its_clause_writes() -> None:
    clauses = POLICY.splitlines() + ["每年3月进行一次年度体检。"]
    assert with_unit("3", "年假需要提前几天申请？", clauses) == "3个工作日"
    assert with_unit("3个工作日", "年假需要提前几天申请？", clauses) is None  # not bare
    assert with_unit("7", "年假需要提前几天申请？", clauses) is None          # not written


def test_grounding_replaces_an_answer_of_another_kind_with_the_row_asked_about() -> None:
    # (the question does not name the column, "最大吸力", which the column check would read)
    grounded = ground("2999元", [SPECS], "R2的吸力最大是多少？", "span")
    assert grounded.action == "span"
    assert grounded.support is not None and grounded.support.mismatch == "asks pressure, gives money"
    assert "4000Pa" in grounded.text and "R2" in grounded.text
    assert ground("2999元", [SPECS], "R2的吸力最大是多少？", "refuse").action == "refused"
    assert ground("2999元", [SPECS], "R2的吸力最大是多少？", "off").text == "2999元"
    kept = ground("4000Pa", [SPECS], "R2的吸力最大是多少？", "span")
    assert (kept.action, kept.text) == ("kept", "4000Pa")


def test_grounding_completes_a_bare_number_and_refuses_an_echo_with_nothing_better() -> None:
    completed = ground("3", [POLICY], "年假需要提前几天申请？", "span")
    assert (completed.action, completed.text, completed.draft) == ("kept", "3个工作日", "3")
    # an answer that repeats the question: the sentence about its subject, never the heading
    # that only repeats the subject too; a refusal when no sentence shares the question's words
    passage = "乍浦镇\n乍浦镇是隶属于中国浙江省嘉兴平湖市的一个镇，位于杭州湾北岸。"
    echo = ground("乍浦镇", [passage], "乍浦镇在哪里？", "span")
    assert (echo.action, echo.text) == ("span", passage.splitlines()[1])
    assert ground("乍浦镇", ["乍浦镇\n本镇盛产海鲜。"], "乍浦镇在哪里？", "span").action == "refused"


def test_the_how_many_of_a_clock_question_asks_no_amount_of_its_topic() -> None:
    """几点 asks a time; the 几 in it is not 'how much' of 报销 (money)."""
    assert asked_kinds("工作到几点以后可以报销加班餐？") == {"time"}
    assert asked_kinds("住宿每晚最多报销多少？") == {"money"}
    assert asked_kinds("交通补贴每月多少？") == {"money"}  # an allowance is an amount of money
