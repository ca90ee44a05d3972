"""What kind of quantity a question asks for (money, a time, a length...) and whether an answer
gives that kind: a small model often answers with the right passage's wrong number ("R2的最大吸力
是多少？" → "1999元", "密码多久必须更换一次？" → "新密码不得与最近5次使用过的密码相同").

A kind is judged only where the question names it: a unit after 多少/几 ("多少积分", "几天"), or
a word that has one unit kind ("多久", "价格", "重量"). A bare "是多少" asks no kind, and then no
answer is judged. An answer mismatches when it writes quantities with units and none is of the
asked kind, when it only repeats the question's words, or (for a duration) when it says no time
at all.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from kbqa.kb.lexical import query_tokens
from kbqa.qa.numerals import with_arabic_numerals

# units by kind, as written right after a number (NFKC, lower case; longer forms first)
UNITS: dict[str, tuple[str, ...]] = {
    "money": ("人民币", "美元", "欧元", "日元", "英镑", "港元", "港币", "块钱", "元"),
    "time": ("个工作日", "工作日", "个小时", "小时", "钟头", "分钟", "秒钟", "秒", "天", "日",
             "个星期", "星期", "周", "个月", "月", "年", "世纪", "min"),
    "length": ("毫米", "厘米", "分米", "公里", "千米", "米", "英寸", "英尺", "英里", "海里", "光年",
               "mm", "cm", "km"),
    "weight": ("毫克", "千克", "公斤", "克", "斤", "吨", "kg", "mg"),
    "volume": ("毫升", "立方米", "升", "ml"),
    "area": ("平方米", "平方公里", "平方千米", "平米", "亩", "公顷", "m2"),
    "frequency": ("赫兹", "khz", "mhz", "ghz", "hz"),
    "power": ("千瓦", "瓦特", "瓦", "kw", "w"),
    "pressure": ("兆帕", "千帕", "帕", "mpa", "kpa", "pa", "bar"),
    "temperature": ("摄氏度", "华氏度", "°c", "°f"),
    "charge": ("毫安时", "mah", "wh"),
    "percent": ("%", "‰"),
    "points": ("积分",),
    "age": ("周岁", "岁"),
    "count": ("个", "次", "人", "名", "位", "家", "台", "件", "种", "条", "座", "所", "项", "本", "部",
              "篇", "首", "场", "届", "辆", "架", "艘", "只", "张", "套", "款", "间", "层", "倍"),
}
# words that ask for one kind by themselves
_ASKING: dict[str, tuple[str, ...]] = {
    "money": ("多少钱",),
    "time": ("多久", "多长时间", "多少时间", "几点", "何时", "什么时候", "什么时间", "哪一年", "哪年",
             "几月", "哪天", "哪一天"),
    "length": ("多长", "多宽", "多高", "多远", "多深", "多厚"),
    "weight": ("多重",),
    "percent": ("百分之几",),
    "age": ("几岁", "多少岁"),
}
# nouns that name one kind when the question asks how much of it ('价格是多少', '保修期几年');
# asked otherwise ('工资按什么标准发放') they are only the topic
_TOPICS: dict[str, tuple[str, ...]] = {
    "money": ("价格", "价钱", "售价", "单价", "报价", "零售价", "经销商价", "费用", "收费", "运费",
              "租金", "工资", "薪资", "月薪", "年薪", "奖金", "罚款", "报销", "补贴", "补助", "津贴",
              "餐补"),
    "time": ("有效期", "保修期", "期限", "周期", "时长"),
    "length": ("长度", "宽度", "高度", "厚度", "深度", "直径", "半径", "身高", "距离", "海拔"),
    "weight": ("重量", "体重", "净重", "毛重"),
    "area": ("面积", "占地"),
    "frequency": ("频率",),
    "power": ("功率",),
    "pressure": ("吸力", "气压", "压强", "压力"),
    "temperature": ("温度", "水温", "气温", "体温"),
    "percent": ("百分比", "比例", "占比", "比率", "增长率", "利率", "税率"),
    "age": ("年龄", "年纪"),
}
_HOW_MUCH = re.compile("多少|几|多大")
# a share may answer how much money, how many or how many points ('基本工资的80%')
_ALSO_ANSWERS = {"money": {"percent"}, "count": {"percent"}, "points": {"percent"}}
# asking a duration: the answer must say some time (a unit, a clock or one of these words)
_DURATION = ("多久", "多长时间", "多少时间", "几天", "几个月", "几年", "几小时", "几个小时", "几周",
             "几分钟", "多少天", "多少年", "多少小时", "多少分钟")
_TIME_WORDS = ("立即", "立刻", "马上", "随时", "当天", "当日", "次日", "永久", "长期", "终身", "即时",
               "半年", "半个月", "每周", "每月", "每年", "每天", "每日")
_WH = re.compile("什么|哪|谁|多少|几|多[久长高远重宽深厚大]|怎么|怎样|如何|为什么|何")

_UNIT_TO_KIND = {unit: kind for kind, units in UNITS.items() for unit in units}
_ALL_UNITS = sorted(_UNIT_TO_KIND, key=len, reverse=True)
_LATIN = re.compile(r"[a-z]")
# an ordinal ('第9条', '第3名') numbers things, it counts none: '第' before the number is no quantity
_QUANTITY = re.compile(
    r"(?<![第\d.])(\d+(?:\.\d+)?)\s*([万亿千百]?)\s*(" + "|".join(re.escape(u) for u in _ALL_UNITS) + ")")
_CLOCK = re.compile(r"\d{1,2}:\d{2}")
_ASKED_UNIT = re.compile(r"(?:多少|几)个?(" + "|".join(re.escape(u) for u in _ALL_UNITS) + ")")


def plain(text: str) -> str:
    """NFKC-folded and lower-cased, Chinese numerals written as digits ('两天' → '2天')."""
    return with_arabic_numerals(unicodedata.normalize("NFKC", text).lower())


def quantities(text: str) -> list[tuple[str, str, str]]:
    """(number, unit as written, kind) for each number in `text` written with a unit of a known
    kind ('3万元' → ('3', '万元', 'money')); a clock time ('9:30') is ('9:30', '', 'time')."""
    text = plain(text)
    found = [(match.group(), "", "time") for match in _CLOCK.finditer(text)]
    for match in _QUANTITY.finditer(text):
        unit = match.group(3)
        after = text[match.end():match.end() + 1]
        if _LATIN.match(unit) and _LATIN.match(after):  # '5mins' is not '5m': a longer word
            continue
        found.append((match.group(1), match.group(2) + unit, _UNIT_TO_KIND[unit]))
    return found


def unit_conflicts(answer: str, passage: str) -> tuple[str, ...]:
    """The answer's quantities whose number the passage writes only with a unit of another kind
    ('1299平方米' where the passage has '1299元'); a number it writes bare is no conflict."""
    written: dict[str, set[str]] = {}
    for value, _, kind in quantities(passage):
        written.setdefault(value, set()).add(kind)
    return tuple(value + unit for value, unit, kind in quantities(answer)
                 if unit and value in written and kind not in written[value])


def asked_kinds(question: str) -> frozenset[str]:
    """The kinds of quantity that answer the question (one, or length and time for '多长');
    empty when it names none, or names several that disagree."""
    text = plain(question)
    unit = _ASKED_UNIT.search(text)
    if unit:
        return frozenset({_UNIT_TO_KIND[unit.group(1)]})
    kinds = {kind for kind, words in _ASKING.items() if any(word in text for word in words)}
    # the 几 of 几点 asks a time, not how much of a topic ('几点以后可以报销' asks no money)
    rest = re.sub("|".join(word for words in _ASKING.values() for word in words), " ", text)
    if _HOW_MUCH.search(rest):
        kinds |= {kind for kind, words in _TOPICS.items() if any(word in text for word in words)}
    if "多长时间" in text:
        kinds.discard("length")
    elif "多长" in text and kinds <= {"length", "time"}:
        return frozenset({"length", "time"})  # 试用期多长: a time; 电源线多长: a length
    return frozenset(kinds) if len(kinds) == 1 else frozenset()


def holds_kind(text: str, kinds: frozenset[str]) -> bool:
    """Whether `text` writes a quantity of one of `kinds`, or (for a time) a word that says one
    ('每周', '当天')."""
    if any(kind in kinds for _, _, kind in quantities(text)):
        return True
    return "time" in kinds and any(word in plain(text) for word in _TIME_WORDS)


def mismatch(answer: str, question: str) -> str | None:
    """Why the answer is not what the question asks for ('asks time, gives count'), or None when
    it is (or when the question asks no kind)."""
    if not _WH.search(question):
        return None
    answer_plain, question_plain = _squeezed(answer), _squeezed(question)
    if len(answer_plain) >= 2 and answer_plain in question_plain:
        return "repeats the question"
    kinds = asked_kinds(question)
    if not kinds:
        return None
    given = {kind for _, _, kind in quantities(answer)}
    accepted = set(kinds).union(*(_ALSO_ANSWERS.get(kind, set()) for kind in kinds))
    if given and not given & accepted:
        return f"asks {'/'.join(sorted(kinds))}, gives {'/'.join(sorted(given))}"
    text = plain(answer)
    if (not given and any(word in plain(question) for word in _DURATION)
            and not re.search(r"\d", text) and not any(w in text for w in _TIME_WORDS)
            and not any(u in text for u in UNITS["time"])):
        return "asks a duration, says no time"
    return None


_YES_NO = re.compile(r"(?:是否|能否|可否|有没有|是不是|能不能|会不会|可不可以|要不要|需不需要|"
                     r"吗)[\s?？。.!！]*$|是否|能否|可否")
_POLAR = re.compile(r"(不是|不对|不可以|不能|不会|没有|不需要|不支持|不允许|不要|不行|不用|否|"
                    r"是|对|可以|能|会|有|需要|支持|允许|要|行)[\s。.!！]*")
# words that make a sentence say no ('试用期员工不得申请远程办公')
_NEGATIONS = ("不得", "不能", "不可", "不允许", "不支持", "不予", "不提供", "不需要", "不用", "不包括",
              "不在", "不会", "无法", "无需", "没有", "禁止", "严禁", "暂不", "未")


def yes_no(question: str) -> bool:
    """Whether the question, or one of its questions, asks yes or no ('试用期员工可以申请远程办公
    吗？', '可以寄到海外吗？运费多少？')."""
    parts = [part for part in re.split(r"(?<=[?？])", question) if part.strip()]
    return any(_YES_NO.search(part) and not _WH.search(part) for part in parts)


def polarity(answer: str) -> bool | None:
    """True for a bare yes ('是', '可以'), False for a bare no ('否', '不能'), None for anything
    longer."""
    match = _POLAR.fullmatch(answer.strip())
    if not match:
        return None
    return not match.group(1).startswith(("不", "没", "否"))


def says_no(text: str) -> bool:
    """Whether a sentence denies something ('不得', '禁止', '无法')."""
    return any(word in plain(text) for word in _NEGATIONS)


def _squeezed(text: str) -> str:
    return re.sub(r"[\W_]+", "", plain(text))


MIN_SHARED = 2  # question words a chosen clause must hold (all of them when fewer): one is chance


def _words(question: str) -> set[str]:
    return {token for token in query_tokens(question) if len(token) > 1}


def shared_words(question: str, text: str) -> int:
    """How many of the question's words (character pairs and Latin words, its interrogatives
    left out) `text` holds."""
    plain_text = plain(text)
    return sum(word in plain_text for word in _words(question))


def _best_of_kind(question: str, clauses: Sequence[str], number: str | None = None,
                  any_kind: bool = False, at_least: int = 0) -> tuple[str, str] | None:
    """(clause, unit) of the clause that writes a quantity of an asked kind (`number`'s, when
    given; any clause with `any_kind`) and shares the most question words, the first of equals
    (clauses come in the passages' rank order); None when none shares MIN_SHARED, or
    `at_least`."""
    kinds = asked_kinds(question)
    words = _words(question)
    need = max(min(MIN_SHARED, len(words)), at_least)
    if not (kinds or any_kind) or not need:
        return None
    scored: dict[str, tuple[int, str]] = {}
    asked = _squeezed(question)
    for clause in clauses:
        if _squeezed(clause) in asked:  # a heading that repeats the question's subject
            continue
        units = [unit for value, unit, kind in quantities(clause)
                 if kind in kinds and (unit or ":" in value)  # a clock time has no unit
                 and (number is None or value == number)]
        if any_kind and not kinds:
            units = [""]
        if units:
            text = plain(clause)
            scored[clause] = (sum(word in text for word in words), units[0])
    ranked = sorted(scored.items(), key=lambda item: item[1][0], reverse=True)  # stable
    if not ranked or ranked[0][1][0] < need:
        return None
    return ranked[0][0], ranked[0][1][1]


def clause_of_kind(question: str, clauses: Sequence[str], at_least: int = 0) -> str | None:
    """The clause (a sentence or a table row) that shares the most question words (at least
    MIN_SHARED, and `at_least`) and writes a quantity of the asked kind, when the question asks
    one; None when no clause qualifies."""
    best = _best_of_kind(question, clauses, any_kind=True, at_least=at_least)
    return best[0] if best else None


def with_unit(answer: str, question: str, clauses: Sequence[str]) -> str | None:
    """A bare number ('3') completed with the unit of the asked kind that the clause about the
    question writes after it ('3个工作日'); None when the answer is not a bare number or no clause
    about the question writes it with such a unit."""
    number = plain(answer).strip().rstrip("。.")
    if not re.fullmatch(r"\d+(?:\.\d+)?", number):
        return None
    best = _best_of_kind(question, clauses, number)
    return number + best[1] if best else None
