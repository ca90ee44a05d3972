"""The grounding check on passages as kbqa retrieves them: numbers with units, characters, policies,
and the service giving the checked answer while the model's draft streams."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbqa.config import Settings
from kbqa.qa.grounding import Grounding, check_support, ground, with_arabic_numerals
from kbqa.qa.prompts import REFUSAL
from kbqa.service import KbqaService
from tests.test_store import fake_embeddings

DOCUMENTS = Path(__file__).resolve().parents[1] / "bench" / "data" / "company_docs" / "documents"
# chunks as the Markdown loader and splitter give them: a heading lead, then the section's text
REMOTE = ("【三、远程办公】经直属主管批准，转正员工可申请远程办公。每周最多远程2天，每月不超过8天。"
          "试用期员工不得申请远程办公。")
LEAVE = ("【六、请假审批】所有假期均须在“星河通”中提交申请，审批权限如下：\n- 请假1天以内（含1天）的，"
         "由直属主管审批；\n- 连续休假超过1天、不超过5天的，由直属主管和部门经理审批；\n"
         "- 连续休假超过5天的，须由部门总监审批，并抄送人力资源部备案。")
# a table chunk as the DOCX loader writes it (kbqa/ingest/tables.py)
SPECS = ("【一、规格参数】\n| 项目 | 参数 |\n| --- | --- |\n| 最大吸力 | 4000Pa |\n"
         "| 电池容量 | 5200mAh |\n| 集尘站尘袋容量 | 3升 |\n| 整机重量 | 3.8千克 |")
PASSAGES = [REMOTE, LEAVE, SPECS]


def test_the_passages_are_the_company_documents_text() -> None:
    handbook = (DOCUMENTS / "员工手册.md").read_text(encoding="utf-8")
    assert "每周最多远程2天，每月不超过8天。" in handbook
    assert "连续休假超过5天的，须由部门总监审批，并抄送人力资源部备案。" in handbook


@pytest.mark.parametrize("answer", ["2天", "每周最多远程2天", "须由部门总监审批", "部门总监",
                                    "4000Pa", "４０００ Ｐａ", "3升", "3.8千克", "5200mAh"])
def test_an_answer_the_passages_hold_is_supported(answer: str) -> None:
    support = check_support(answer, PASSAGES)
    assert support.supported and support.missing_numbers == ()


def test_which_passage_supports_it_is_named() -> None:
    assert check_support("部门总监", PASSAGES).passage == 1
    assert check_support("4000Pa", PASSAGES).passage == 2


@pytest.mark.parametrize(("answer", "missing"), [
    ("5000Pa", ("5000pa",)),  # a number no passage holds
    ("4000W", ("4000w",)),    # the number with another unit
    ("400Pa", ("400pa",)),    # a number inside a longer one is not that number
    ("3.5千克", ("3.5",)),
])
def test_a_number_the_passages_do_not_hold_is_unsupported(answer: str, missing: tuple) -> None:
    support = check_support(answer, PASSAGES)
    assert not support.supported and support.missing_numbers == missing


def test_words_the_passages_do_not_hold_are_unsupported() -> None:
    support = check_support("须由人力资源部总经理批准", PASSAGES)
    assert not support.supported and support.coverage < 0.8


def test_a_unit_changed_after_a_number_that_is_there_is_unsupported() -> None:
    # "3" is in the passages (3升), "3天" is nowhere
    assert not check_support("3天", PASSAGES).supported


def test_chinese_numerals_compare_with_the_passages_digits() -> None:
    assert with_arabic_numerals("两天、十五天、三千元、第一条") == "2天、15天、3000元、第1条"
    assert check_support("每周最多两天", PASSAGES).supported
    assert not check_support("每周最多三天", PASSAGES).supported


def test_words_echoed_from_the_question_count_as_support() -> None:
    question = "试用期的新人可以居家上班吗？"
    assert not check_support("试用期的新人不得居家上班", PASSAGES).supported
    assert check_support("试用期的新人不得居家上班", PASSAGES, question).supported


def test_policies_keep_replace_or_refuse_an_unsupported_answer() -> None:
    question, draft = "连续休假超过5天需要谁审批？", "超过5天的，须由部门总监和董事会共同审批"
    off = ground(draft, PASSAGES, question, "off")
    assert (off.text, off.action, off.support) == (draft, "unchecked", None)
    refused = ground(draft, PASSAGES, question, "refuse")
    assert (refused.text, refused.action, refused.draft) == (REFUSAL, "refused", draft)
    span = ground(draft, PASSAGES, question, "span")
    assert span.action == "span" and span.text == "- 连续休假超过5天的，须由部门总监审批，并抄送人力资源部备案。"


def test_span_refuses_when_no_clause_supports_the_answer() -> None:
    grounded = ground("1999元", PASSAGES, "R2的最大吸力是多少？", "span")
    assert (grounded.text, grounded.action) == (REFUSAL, "refused")


def test_supported_answers_refusals_and_empty_contexts_pass_unchanged() -> None:
    assert ground("4000Pa", PASSAGES, "", "refuse").text == "4000Pa"
    assert ground(REFUSAL + "。", PASSAGES, "", "refuse").action == "unchecked"
    assert ground("1999元", [], "", "refuse").text == "1999元"


def test_the_service_answers_the_grounded_text_while_the_draft_streams(tmp_path: Path,
                                                                      tiny_llm) -> None:
    """End to end with a real (tiny) model: what it writes from the handbook is checked against
    the passages it was given, and the answer given is what the check made of it."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "员工手册.md").write_bytes((DOCUMENTS / "员工手册.md").read_bytes())
    service = KbqaService(Settings(home=tmp_path / "home", grounding="refuse"),
                          embeddings=fake_embeddings(), llm=tiny_llm)
    service.ingest([folder])
    question = "每周最多可以远程办公几天？"
    events = list(service.stream(question))
    answer = events[-1][1]
    draft = "".join(value for kind, value in events if kind == "token").strip()
    passages = [d.page_content for d in service.retrieve(question)]
    assert passages and answer.grounding is not None and answer.grounding.draft.strip() == draft
    # greedy decoding: the 135M model's draft is the same every run, and no passage holds it
    assert draft and not check_support(draft, passages, question).supported
    assert (answer.text, answer.refused, answer.grounding.action) == (REFUSAL, True, "refused")
    # with the check off, the same draft is the answer
    unchecked = KbqaService(Settings(home=tmp_path / "home", grounding="off"),
                            embeddings=fake_embeddings(), llm=tiny_llm)
    assert unchecked.ask(question).text == draft


# tables as the XLSX and DOCX loaders write them (bench/data/company_docs)
PRICES = ("| 产品型号 | 产品名称 | 建议零售价 | 经销商价 | 保修期 |\n| --- | --- | --- | --- | --- |\n"
          "| XH-R1 | 星河扫地机器人R1 | 1999元 | 1499元 | 1年 |\n"
          "| XH-R2 | 星河扫地机器人R2 | 2999元 | 2299元 | 1年 |\n"
          "| XH-W1 | 星河洗地机W1 | 2499元 | 1899元 | 1年 |")
SPEC_ROWS = ("【一、规格参数】\n| 项目 | 参数 |\n| --- | --- |\n| 产品型号 | XH-R2 |\n"
             "| 机身尘盒容量 | 400毫升 |\n| 水箱容量 | 250毫升 |\n| 机身尺寸 | 350×350×96毫米 |\n"
             "| 整机重量 | 3.8千克 |")


def test_a_value_read_off_another_products_row_is_unsupported() -> None:
    support = check_support("2299元", [PRICES], "洗地机W1的经销商价是多少？")
    assert not support.supported and support.wrong_row
    assert support.span == "产品型号：XH-W1，产品名称：星河洗地机W1，建议零售价：2499元，经销商价：1899元，保修期：1年"
    assert check_support("1899元", [PRICES], "洗地机W1的经销商价是多少？").supported


def test_a_value_read_off_another_spec_row_becomes_the_right_row() -> None:
    question = "R2的水箱容量是多少？"
    grounded = ground("400毫升", [SPEC_ROWS], question, "span")
    assert (grounded.action, grounded.text) == ("span", "项目：水箱容量，参数：250毫升")
    assert ground("400毫升", [SPEC_ROWS], question, "refuse").text == REFUSAL


def test_one_shared_word_does_not_make_another_row_the_one_asked_about() -> None:
    # "机身" is in "机身尺寸" but the weight is what is asked: one word is not enough to overrule
    assert check_support("3.8千克", [SPEC_ROWS], "R2机身有多重？").supported


def test_numbers_in_neighbouring_cells_stay_apart() -> None:
    outlets = ("| 城市 | 网点名称 | 地址 | 电话 | 营业时间 |\n| --- | --- | --- | --- | --- |\n"
               "| 深圳 | 星河售后深圳南山店 | 南山区科苑路15号科兴科学园B座1层 | 0755-8663-4004 | 9:00-18:00 |")
    assert check_support("0755-8663-4004", [outlets], "深圳售后网点的电话是多少？").supported
    assert not check_support("0755-8663-4009", [outlets]).supported


# --- identifiers: an answer read off another product's (year's, city's) passage


R2_SPECS_NAME = "星河扫地机器人R2用户手册.docx · 一、规格参数"


def test_identifiers_are_latin_or_digit_words_with_a_digit_or_a_capital() -> None:
    from kbqa.qa.grounding import identifiers

    assert identifiers("R3 Pro的电池容量是多少？") == ["r3", "pro"]
    assert identifiers("1963年卢卡斯加入了哪个球队？") == ["1963"]
    assert identifiers("访客Wi-Fi的密码是什么？") == ["wi fi"]  # normalised as passages are: "-" is a gap
    assert identifiers("公司的email地址是什么？") == []  # a lowercase word names nothing
    assert identifiers("入职满一年的员工有几天年假？") == []  # Chinese numerals are not identifiers


def test_an_answer_from_another_products_passage_is_refused_under_every_policy() -> None:
    for policy in ("span", "refuse"):
        result = ground("5200mAh", [SPECS], "R3 Pro的电池容量是多少？", policy,
                        names=[R2_SPECS_NAME])
        assert result.text == REFUSAL and result.action == "refused"
        assert result.support is not None and result.support.foreign == ("r3", "pro")
    assert ground("5200mAh", [SPECS], "R3 Pro的电池容量是多少？", "off").text == "5200mAh"


def test_an_identifier_in_the_documents_name_or_written_in_chinese_numerals_counts() -> None:
    kept = ground("5200mAh", [SPECS], "R2的电池容量是多少？", "span", names=[R2_SPECS_NAME])
    assert kept.action == "kept" and kept.text == "5200mAh"
    # the question writes 5, the passage 五
    five = LEAVE.replace("超过5天的，须由", "超过五天的，须由").replace("不超过5天", "不超过五天")
    assert ground("部门总监", [five], "连续休假超过5天需要谁审批？", "span").action == "kept"


def test_a_second_passage_that_names_the_identifier_and_holds_the_answer_keeps_it() -> None:
    r3 = "【R3 Pro 规格】| 项目 | 参数 |\n| --- | --- |\n| 电池容量 | 5200mAh |"
    kept = ground("5200mAh", [SPECS, r3], "R3 Pro的电池容量是多少？", "span",
                  names=[R2_SPECS_NAME, "R3 Pro 手册.docx"])
    assert kept.action == "kept"


def test_the_chain_checks_identifiers_against_each_passages_file_and_heading() -> None:
    from langchain_core.documents import Document

    from kbqa.qa.chain import check_answer

    docs = [Document(page_content=SPECS, metadata={"source": "/kb/files/星河扫地机器人R2用户手册.docx",
                                                   "heading": "一、规格参数"})]
    assert check_answer("5200mAh", docs, "R2的电池容量是多少？", "span").action == "kept"
    assert check_answer("5200mAh", docs, "W1的电池容量是多少？", "span").text == REFUSAL


def test_the_company_a_file_is_named_after_must_be_the_answers() -> None:
    """Three companies' FAQs in the same words: the question's company stands only in one file
    name, and the answer read off another company's FAQ is not given."""
    faq = "【以旧换新最多抵多少钱？】以旧换新最高可抵扣{}元。"
    passages = [faq.format(100), faq.format(550), faq.format(250)]
    titles = ["青禾科技常见问题", "禾丰农机常见问题", "蓝鲸电器常见问题"]
    question = "禾丰农机以旧换新最多抵多少钱？"
    from kbqa.qa.grounding import name_terms

    assert name_terms(question, titles) == ["禾丰农机"]
    wrong = ground("100元", passages, question, "span", titles=titles)
    assert wrong.support is not None and wrong.support.foreign == ("禾丰农机",)
    # the company's own FAQ says how much: its sentence replaces the other company's number
    assert (wrong.action, wrong.text) == ("span", "以旧换新最高可抵扣550元。")
    assert ground("100元", passages, question, "refuse", titles=titles).action == "refused"
    assert ground("550元", passages, question, "span", titles=titles).action == "kept"
    # a run in every file name tells nothing apart; two characters (价格) name nothing
    assert name_terms("常见问题里以旧换新最多抵多少钱？", titles) == []
    assert name_terms("R2的建议零售价格是多少？", ["2026年产品价格表", "R2用户手册"]) == []
    # one file alone: nothing to tell apart
    assert ground("100元", passages[:1], question, "span", titles=titles[:1]).action == "kept"


def test_a_follow_up_is_checked_against_what_the_earlier_question_named() -> None:
    table = ("| 型号 | 制冷量 | 室内机噪音 |\n| --- | --- | --- |\n| KF41 | 3500W | 38分贝 |\n"
             "| KF49 | 7200W | 19分贝 |")
    follow_up, earlier = "那它的室内机噪音呢？", "青禾科技KF41的制冷量是多少？"
    # alone it names nothing: the 19分贝 of another row stands
    assert ground("19分贝", [table], follow_up, "span").action == "kept"
    # in its conversation it is about the KF41: the right row replaces the wrong one
    fixed = ground("19分贝", [table], follow_up, "span", earlier=earlier)
    assert fixed.action == "span" and "38分贝" in fixed.text and "KF41" in fixed.text
    # a question on a new topic is not read as a follow-up
    from kbqa.qa.grounding import subject_of

    assert subject_of("KF49的噪音是多少？", earlier) == "KF49的噪音是多少？"
    assert subject_of(follow_up, earlier) == f"{earlier} {follow_up}"


def test_an_answer_off_another_citys_row_gives_the_citys_row_or_a_refusal() -> None:
    outlets = ("| 城市 | 地址 | 电话 |\n| --- | --- | --- |\n| 深圳 | 南山区科技园路88号 | 0755-8663-4004 |\n"
               "| 杭州 | 西湖区文三路478号 | 0571-8821-3300 |\n| 成都 | 高新区天府大道666号 | 028-8512-7700 |")
    from kbqa.qa.places import place_names

    assert place_names("杭州的售后网点在哪里？") == ("杭州",)
    row = ground("南山区科技园路88号", [outlets], "杭州的售后网点在哪里？", "span")
    assert row.action == "span" and "文三路478号" in row.text
    # a city the list does not have: no row answers for it
    missing = ground("0755-8663-4004", [outlets], "西安售后网点的电话是多少？", "span")
    assert missing.action == "refused" and missing.support is not None
    assert missing.support.foreign == ("西安",)
    kept = ground("028-8512-7700", [outlets], "成都售后网点的电话是多少？", "span")
    assert (kept.action, kept.text) == ("kept", "028-8512-7700")


def test_a_number_the_passage_writes_with_a_unit_of_another_kind_is_unsupported() -> None:
    prices = "| 产品 | 价格 |\n| --- | --- |\n| 空气净化器A1 | 1299元 |"
    support = check_support("1299平方米", [prices], "空气净化器A1的适用面积是多少平方米？")
    assert not support.supported and support.missing_numbers == ("1299平方米",)
    assert support.span is None  # the price row says nothing about an area: a refusal
    assert ground("1299平方米", [prices], "空气净化器A1的适用面积是多少平方米？", "span").action == "refused"
    assert check_support("1299元", [prices], "空气净化器A1多少钱？").supported
    assert check_support("1299", [prices], "空气净化器A1多少钱？").supported  # bare: no conflict


def test_a_question_about_abroad_is_not_answered_by_a_domestic_rule() -> None:
    rule = "国内出差住宿标准：一线城市每晚不超过600元，其他城市每晚不超过400元。"
    refused = ground("600元", [rule], "去国外出差，住宿标准每晚多少钱？", "span")
    assert refused.action == "refused" and refused.support is not None
    assert refused.support.foreign == ("国外",)
    assert ground("600元", [rule], "去北京出差，住宿标准每晚多少钱？", "span").action == "refused"
    abroad = rule + "国外出差住宿按实际发生额报销。"
    assert ground("按实际发生额报销", [abroad], "去国外出差，住宿怎么报销？", "span").action == "kept"


def test_a_value_from_another_column_becomes_the_named_columns_cell() -> None:
    grounded = ground("2499元", [PRICES], "洗地机W1的经销商价是多少？", "span")
    assert (grounded.action, grounded.text) == ("span", "经销商价：1899元")
    assert grounded.support is not None and grounded.support.wrong_column
    assert ground("1899元", [PRICES], "洗地机W1的经销商价是多少？", "span").action == "kept"
    # no column named, or a value several rows share: nothing to say
    assert ground("2499元", [PRICES], "洗地机W1多少钱？", "span").action == "kept"


def test_a_company_no_given_passage_names_is_checked_against_the_knowledge_bases_files() -> None:
    """The question's company has no document among the passages (its handbook says nothing of
    notice periods), so the passages' file names cannot tell that "青禾科技" names a company:
    the knowledge base's file names can, and the other company's rule is refused."""
    from langchain_core.documents import Document
    from langchain_core.language_models import FakeListLLM

    from kbqa.qa.chain import build_qa_chain, fixed_context

    rule = Document("第2条 员工离职须提前30天以书面形式通知公司。",
                    metadata={"filename": "蓝鲸电器员工福利与考勤制度.txt"})
    question = "青禾科技离职要提前多久通知公司？"
    library = ["蓝鲸电器员工福利与考勤制度", "青禾科技员工福利与考勤制度", "青禾科技常见问题"]

    def answer(files: list[str] | None) -> Grounding:
        chain = build_qa_chain(fixed_context([rule]), FakeListLLM(responses=["30天"]),
                               grounding="span", library=(lambda: files) if files else None)
        return chain.invoke({"question": question})["grounded"]

    assert answer(None).action == "kept"
    refused = answer(library)
    assert refused.action == "refused" and refused.support is not None
    assert refused.support.foreign == ("青禾科技",)
    # the company's own rule stands
    own = Document(rule.page_content, metadata={"filename": "青禾科技员工福利与考勤制度.txt"})
    chain = build_qa_chain(fixed_context([own]), FakeListLLM(responses=["30天"]),
                           grounding="span", library=lambda: library)
    assert chain.invoke({"question": question})["grounded"].action == "kept"


def test_the_service_gives_the_knowledge_bases_file_names(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "员工手册.md").write_bytes((DOCUMENTS / "员工手册.md").read_bytes())
    (folder / "常见问题解答.txt").write_bytes((DOCUMENTS / "常见问题解答.txt").read_bytes())
    service = KbqaService(Settings(home=tmp_path / "home"), embeddings=fake_embeddings())
    names = service.library()  # made before the documents are there: read when called
    service.ingest([folder])
    assert sorted(names()) == ["员工手册", "常见问题解答"]
    faq = next(record.source for record in service.knowledge_base().documents()
               if record.filename == "常见问题解答.txt")
    service.remove_document(service.settings.kb.name, faq)
    assert names() == ["员工手册"]


def test_an_outlet_list_without_the_asked_city_does_not_answer_for_it() -> None:
    """The company's list has no 广州 row; another company's passage does name 广州, so the
    place check (some passage) passes, and the row read off (上海) is still not 广州's."""
    outlets = ("| 城市 | 地址 | 电话 |\n| --- | --- | --- |\n| 上海 | 上海市科技园路11号 | 015-5040-4597 |\n"
               "| 北京 | 北京市中山路185号 | 024-2107-4975 |")
    elsewhere = "| 城市 | 地址 | 电话 |\n| --- | --- | --- |\n| 广州 | 广州市长江路7号 | 020-1234-5678 |"
    question = "广州售后网点的电话是多少？"
    refused = ground("015-5040-4597", [outlets, elsewhere], question, "span")
    assert refused.action == "refused" and refused.support is not None
    assert refused.support.foreign == ("广州",)
    # a row keyed by something that is not a place says nothing of places
    models = ("【广州地区服务电话】\n| 型号 | 电话 |\n| --- | --- |\n| KF41 | 400-800-1234 |\n"
              "| KF49 | 400-800-5678 |")
    assert ground("400-800-1234", [models], "KF41在广州的服务电话是多少？", "span").action == "kept"


def test_part_of_a_table_cell_is_given_as_the_whole_cell() -> None:
    outlets = ("| 城市 | 地址 | 电话 |\n| --- | --- | --- |\n| 厦门 | 厦门市中山路289号 | 011-5185-7758 |\n"
               "| 南京 | 南京市和平街46号 | 074-9864-8704 |")
    grounded = ground("中山路289号", [outlets], "厦门售后网点的地址是什么？", "span")
    assert (grounded.action, grounded.text) == ("kept", "厦门市中山路289号")
    assert ground("厦门市中山路289号", [outlets], "厦门售后网点的地址是什么？", "span").text == \
        "厦门市中山路289号"
    # prose has no cells: the answer stands as written
    prose = "厦门网点位于厦门市中山路289号。"
    assert ground("中山路289号", [prose], "厦门网点的地址是什么？", "span").text == "中山路289号"


def test_an_answer_from_another_companys_rules_becomes_the_named_companys_sentence() -> None:
    ours = "第7条 员工入职满一年后，每年享有带薪年假9天。\n第9条 公司每月为全职员工发放餐补850元。"
    theirs = "第3条 员工入职满一年后，每年享有带薪年假12天。"
    passages, titles = [theirs, ours], ["蓝鲸电器员工福利与考勤制度", "青禾科技员工福利与考勤制度"]
    grounded = ground("12天", passages, "青禾科技入职满一年后年假有几天？", "span", titles=titles)
    assert grounded.action == "span" and grounded.support is not None
    assert grounded.support.foreign == ("青禾科技",)
    assert grounded.text == "第7条 员工入职满一年后，每年享有带薪年假9天。"
    # an article's number counts nothing: no sentence of the company's says how many check-ups
    refused = ground("两次", [theirs + "\n第4条 公司每年组织员工体检两次。", ours],
                     "青禾科技公司每年组织几次体检？", "span", titles=titles)
    assert refused.action == "refused"
    # a question that asks no kind of quantity gets no sentence in its place
    assert ground("12天", passages, "青禾科技的年假怎么规定？", "span", titles=titles).action == "refused"


def test_a_follow_up_reads_the_row_of_the_table_that_names_its_model() -> None:
    """Two companies' spec tables: the draft's 19分贝 is another model's in both. The row read
    is the one keyed by the model the conversation is about, in the table that names it, and
    the key naming both of its words ('KF28 Max', not 'KF44 Max')."""
    theirs = ("| 型号 | 室内机噪音 | 制冷量 |\n| --- | --- | --- |\n| KF49 | 19分贝 | 7200W |\n"
              "| KF58 Max | 38分贝 | 5200W |")
    ours = ("| 型号 | 室内机噪音 | 制冷量 |\n| --- | --- | --- |\n| KF44 Max | 19分贝 | 3100W |\n"
            "| KF28 Max | 40分贝 | 6200W |\n| KF41 | 41分贝 | 6000W |")
    for earlier, right in (("KF41的制冷量是多少？", "41分贝"), ("KF28 Max的制冷量是多少？", "40分贝")):
        fixed = ground("19分贝", [theirs, ours], "那它的室内机噪音呢？", "span", earlier=earlier)
        assert fixed.action == "span" and right in fixed.text, (earlier, fixed)
    assert ground("19分贝", [theirs, ours], "那它的室内机噪音呢？", "span",
                  earlier="KF44 Max的制冷量是多少？").action == "kept"


def test_a_follow_up_answered_off_another_companys_table_gets_its_models_row() -> None:
    """The draft's 2升 is in another company's table only; the table that names the model has
    its row, and the question names one of its columns."""
    theirs = "| 型号 | 水箱容量 | 泵压 |\n| --- | --- | --- |\n| C43S | 2升 | 12bar |\n| C44 Pro | 1.3升 | 19bar |"
    ours = ("| 型号 | 水箱容量 | 研磨档位 |\n| --- | --- | --- |\n| C43 Pro | 1.8升 | 7档 |\n"
            "| C9 Max | 1.3升 | 14档 |")
    earlier = "C9 Max的研磨档位是多少？"
    fixed = ground("2升", [theirs, ours], "那它的水箱容量呢？", "span", earlier=earlier)
    assert (fixed.action, fixed.text) == ("span", "型号：C9 Max，水箱容量：1.3升，研磨档位：14档")
    # a column the table does not have: no row stands for it
    assert ground("12bar", [theirs, ours], "那它的泵压呢？", "span",
                  earlier=earlier).action == "refused"


def test_the_column_asked_is_read_in_the_row_of_the_model_asked_when_several_rows_hold_it() -> None:
    specs = ("| 型号 | 清洁模式 | 防水等级 |\n| --- | --- | --- |\n| T4 | 3种 | IPX8 |\n"
             "| T27S | 6种 | IPX8 |")
    fixed = ground("IPX8", [specs], "那它的清洁模式呢？", "span", earlier="T27S的防水等级是多少？")
    assert (fixed.action, fixed.text) == ("span", "清洁模式：6种")


def test_a_span_for_an_answer_of_the_wrong_kind_comes_from_the_asked_companys_passages() -> None:
    theirs = "【会员积分】每150积分可抵扣1元。"
    ours = "【会员积分】会员积分的有效期为一年，到期自动清零。"
    titles = ["蓝鲸电器常见问题", "松果家居常见问题"]
    grounded = ground("会员积分的有效期为一年，到期自动清零。", [theirs, ours],
                      "松果家居多少积分可以抵1元？", "span", titles=titles)
    assert grounded.action == "refused"


def test_a_knowledge_base_deleted_while_an_answer_is_checked_gives_no_names_not_an_error(
        tmp_path: Path) -> None:
    """Another process may remove the base between retrieval and the check: the answer is then
    checked against its passages' own file names, as before there was a list."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "员工手册.md").write_bytes((DOCUMENTS / "员工手册.md").read_bytes())
    service = KbqaService(Settings(home=tmp_path / "home"), embeddings=fake_embeddings())
    service.ingest([folder])
    names = service.library()
    other = KbqaService(Settings(home=tmp_path / "home"), embeddings=fake_embeddings())
    other.delete_knowledge_base(other.settings.kb.name)
    assert names() == []
