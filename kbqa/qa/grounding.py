"""Grounding: is the answer written in the passages it was given, and what to say when it is not.

A small model sometimes answers with a number or a phrase that no passage holds. The check looks
for the answer's claims in the passages after folding full-width forms and case (NFKC) and
dropping spaces and punctuation:

- every number of the answer must stand in one passage as a whole number (not inside a longer
  one), followed there by the Latin unit the answer writes after it ("4000Pa", "5200mAh", "12%"),
  and not only with a unit of another kind ("1299平方米" where the passage has "1299元");
- most of its other characters must be found there too, each as part of a character pair the
  passage holds (pairs the question holds count as well: an answer may echo the question);
- in a table, the row it comes from must be the row the question is about: when another row
  shares ROW_MARGIN more of the question's words (its model or city, say) and does not hold the
  answer, the answer was read off the wrong row; and its column must be the one the question
  names, when it names one ("经销商价" asked, the 建议零售价 cell given);
- the identifiers the question names (words with a digit or a capital letter: a model "R3 Pro",
  a year "1963", "Wi-Fi") must stand in a passage that supports the answer, in its text or in
  its document's name and heading: an answer read off another product's passage is about
  something else, whatever it says. So must the question's runs of three or more characters
  that some of the passages' file names hold and others do not (the company of
  禾丰农机常见问题.md, beside other companies' FAQs), and the places it names (kbqa.qa.places:
  an outlet list without 长沙 does not answer for 长沙);
- the answer must be the kind of thing the question asks for (kbqa.qa.answer_kinds): a money
  amount does not answer "最大吸力是多少", a count does not answer "多久", and an answer that only
  repeats the question's words answers nothing. A bare number is completed with the unit its
  passage writes after it ("3" → "3个工作日"), and part of a table cell is given as the cell;
- the answer must come from the clause of its sentence that the question is about, and from a
  sentence that shares a word with the question (kbqa.qa.clauses): "每2周" read off "滤网：建议
  每2周清洗一次，每3个月更换一次" does not answer "多久更换";
- a bare yes or no ("否") holds nothing to look for: the sentence that shares most of the
  question's words stands for it, checked like an answer, and is given with it.

The company names a question may use are the file names of the passages and of the whole
knowledge base (`library`): a question about a company whose documents say nothing on the topic
retrieves only other companies' passages, whose names alone would not tell that it names one.

The policy (`answer.grounding`) says what happens to an unsupported answer: kept as it is (off),
replaced by the passage clause that best supports it, or by the row the question is about with
its column names, or (for an answer of the wrong kind) by the sentence or row about the question
that holds the asked kind (span; a refusal when there is none), or replaced by the fixed refusal
(refuse). An answer about another identifier or company is refused under both, unless a passage
that does name it has the row of the model asked about (when the question names a column) or a
clause of the asked kind: then that is given under span.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from kbqa.ingest.tables import is_separator, is_table_line
from kbqa.kb.lexical import query_tokens, tokenize
from kbqa.qa.answer_kinds import (
    asked_kinds,
    clause_of_kind,
    mismatch,
    polarity,
    says_no,
    shared_words,
    unit_conflicts,
    with_unit,
    yes_no,
)
from kbqa.qa.clauses import (
    about_subject,
    off_topic,
    other_clause,
    other_sentence,
    question_words,
)
from kbqa.qa.numerals import with_arabic_numerals
from kbqa.qa.places import place_names
from kbqa.qa.prompts import REFUSAL
from kbqa.qa.snippets import cells

Policy = Literal["off", "span", "refuse"]
MIN_COVERAGE = 0.8       # share of the answer's other characters a supporting passage must hold
MIN_SPAN_COVERAGE = 0.5  # a clause holding less of the answer is no support worth quoting
ROW_MARGIN = 2  # question words another row must share beyond the answer's row: one is chance

_DROPPED = re.compile(r"[^0-9a-z\u3400-\u9fff.%]+")
GAP = " "  # what a run of dropped characters becomes: "0755-8663" is two numbers, not 07558663
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LATIN_UNIT = re.compile(r"[a-z%]+")
_CLAUSE_END = re.compile(r"(?<=[。！？；;!?\n])")
_LEFT_BEHIND = "】」』”）)，,：:"
# a question's identifiers, in NFKC text: Latin letters and digits with inner '.', '-' or '_'
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[.\-_][A-Za-z0-9]+)*")


def normalise(text: str) -> str:
    """NFKC-folded, lower-cased; CJK characters, Latin letters, digits, '.' and '%' kept, any run
    of other characters (spaces, punctuation, table rules) one GAP."""
    return _DROPPED.sub(GAP, unicodedata.normalize("NFKC", text).lower()).strip()


def _numbers(text: str) -> list[tuple[str, str]]:
    """(number, the Latin unit written right after it or '') for each number in normalised text."""
    found = []
    for match in _NUMBER.finditer(text):
        unit = _LATIN_UNIT.match(text, match.end())
        found.append((match.group(), unit.group() if unit else ""))
    return found


def _holds_number(passage: str, number: str, unit: str) -> bool:
    """Whether the passage has `number` as a whole number (followed by `unit` when one is given)."""
    pattern = rf"(?<![\d.]){re.escape(number)}(?!\.?\d)" + (re.escape(unit) if unit else "")
    return re.search(pattern, passage) is not None


def _pairs(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(len(text) - 1) if GAP not in text[i:i + 2]}


def _coverage(claim: str, passage: str, question: str) -> float:
    """Share of the claim's characters that sit in a character pair the passage (or the question)
    also holds; a one-character claim needs only to occur."""
    chars = len(claim.replace(GAP, ""))
    if not chars:
        return 1.0
    if chars == 1:
        return float(claim.strip() in passage or claim.strip() in question)
    known = _pairs(passage) | _pairs(question)
    covered = [False] * len(claim)
    for i in range(len(claim) - 1):
        if claim[i:i + 2] in known:
            covered[i] = covered[i + 1] = True
    # a lone character between gaps ("A", "是") needs only to occur
    words = claim.split(GAP)
    position = 0
    for word in words:
        if len(word) == 1 and (word in passage or word in question):
            covered[position] = True
        position += len(word) + 1
    return sum(covered) / chars


def _holds(claim: str, text: str, question: str, min_coverage: float) -> bool:
    """Whether normalised `text` holds the claim's numbers and enough of its characters."""
    return (all(_holds_number(text, n, u) for n, u in _numbers(claim))
            and _coverage(claim, text, question) >= min_coverage)


def identifiers(question: str) -> list[str]:
    """The question's identifiers, normalised: its Latin-letter or digit words holding a digit
    or a capital letter ('R3', 'Wi-Fi', '1963'; not 'email'). Chinese numerals are not
    identifiers here; in a passage they count as digits ('五天' holds the question's '5')."""
    text = unicodedata.normalize("NFKC", question)
    return [normalise(word) for word in _IDENTIFIER.findall(text)
            if any(c.isdigit() or c.isupper() for c in word)]


MIN_NAME_TERM = 3  # characters a question's run must share with a file name: 价格 names nothing


def name_terms(question: str, titles: Sequence[str]) -> list[str]:
    """The runs of the question (normalised, at least MIN_NAME_TERM characters, maximal) that
    stand in some of the file names but not all: the subject a file is named after ('禾丰农机' of
    禾丰农机常见问题.md), where another file of the same kind is about another one. `titles` may
    be a whole knowledge base's: the names are searched as one text, not one by one."""
    plain_question = normalise(question)
    stems = {normalise(title) for title in titles if title.strip()}
    names = "\n".join(stems)  # no run of the question holds a line break
    found: set[str] = set()
    for start in range(len(plain_question)):
        end = start
        while end < len(plain_question) and plain_question[end] != GAP \
                and plain_question[start:end + 1] in names:
            end += 1
        if end - start >= MIN_NAME_TERM:
            found.add(plain_question[start:end])
    telling = {term for term in found if not all(term in stem for stem in stems)}
    return sorted(term for term in telling if not any(term != other and term in other
                                                       for other in telling))


def _names_all(words: list[str], text: str) -> bool:
    """Whether normalised `text` (Chinese numerals as digits) holds every identifier."""
    plain = normalise(with_arabic_numerals(text))
    return all(word in plain for word in words)


def _tables(passage: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, body rows as cell lists) of each Markdown table in a passage."""
    lines = [line.strip() for line in passage.splitlines()]
    found, index = [], 0
    while index < len(lines) - 1:
        if is_table_line(lines[index]) and is_separator(lines[index + 1]):
            end = index + 2
            while end < len(lines) and is_table_line(lines[end]):
                end += 1
            found.append((cells(lines[index]), [cells(line) for line in lines[index + 2:end]]))
            index = end
        else:
            index += 1
    return found


def _row_text(header: list[str], row: list[str]) -> str:
    """A row as a reader quotes it: '型号：XH-W1，经销商价：1899元' (its cells alone without a header)."""
    if len(header) != len(row) or not any(header):
        return "，".join(row)
    return "，".join(f"{name}：{value}" for name, value in zip(header, row, strict=True))


def _key_patterns(question: str) -> list[re.Pattern[str]]:
    """What a table row's key may name: the question's identifiers and places."""
    names = [re.compile(rf"(?<![0-9a-z]){re.escape(word)}(?![0-9a-z])")
             for word in identifiers(question)]
    return names + [re.compile(re.escape(normalise(place))) for place in place_names(question)]


def _keyed_rows(rows: list[list[str]], names: list[re.Pattern[str]]) -> list[int]:
    """The rows whose key (first cell) names most of the question's identifiers ('KF28 Max', not
    'KF44 Max'); a key-value table ('产品型号 | XH-R2') names its product in a value, and its
    rows are attributes."""
    named_by = [sum(bool(name.search(normalise(row[0]))) for name in names) if row else 0
                for row in rows]
    return [i for i, count in enumerate(named_by) if count and count == max(named_by)]


def _wrong_row(claim: str, passage: str, question: str, min_coverage: float) -> str | None:
    """When the claim comes from table rows of the passage and another row is the one the question
    is about (the one row keyed by the question's identifier or place, 'KF41', '杭州'; or one
    that shares ROW_MARGIN more of the question's words that not every row has) without holding
    the claim: that row, quoted. None when no table row says otherwise."""
    wanted = {token for token in query_tokens(question) if len(token) > 1}
    plain_question = normalise(question)
    names = _key_patterns(question)
    for header, rows in _tables(passage):
        if len(rows) < 2:
            continue
        named = _keyed_rows(rows, names)
        if len(named) == 1 and not _holds(claim, normalise(" ".join(rows[named[0]])),
                                          plain_question, min_coverage) \
                and any(_holds(claim, normalise(" ".join(row)), plain_question, min_coverage)
                        for row in rows):
            return _row_text(header, rows[named[0]])
        found = [wanted & set(tokenize(" ".join(row))) for row in rows]
        common = set.intersection(*found)
        scores = [len(words - common) for words in found]
        holding = [i for i, row in enumerate(rows)
                   if _holds(claim, normalise(" ".join(row)), plain_question, min_coverage)]
        if not holding:
            continue
        best = max(range(len(rows)), key=lambda i: scores[i])
        if scores[best] >= max(scores[i] for i in holding) + ROW_MARGIN and best not in holding:
            return _row_text(header, rows[best])
    return None


def _other_places_row(claim: str, passage: str, question: str,
                      min_coverage: float) -> tuple[str, ...]:
    """The question's places when the claim comes only from table rows keyed by other places
    and no row of that table is keyed by one of them (an outlet list without 广州 does not
    answer for 广州 with 上海's phone); () otherwise."""
    asked = [normalise(place) for place in place_names(question)]
    if not asked:
        return ()
    plain_question = normalise(question)
    for _, rows in _tables(passage):
        keys = [normalise(row[0]) for row in rows if row]
        if any(place in key for place in asked for key in keys):
            return ()
        holding = [row for row in rows if row and _holds(claim, normalise(" ".join(row)),
                                                         plain_question, min_coverage)]
        if holding and all(place_names(row[0]) for row in holding):
            return tuple(asked)
    return ()


def _whole_cell(answer: str, passage: str) -> str | None:
    """The one table cell of the passage that holds the answer as a part ('中山路289号' of
    '厦门市中山路289号'): a cell is one value, and a reader that drops its start drops the city;
    None when no cell or several do, or the answer is the whole cell."""
    claim = normalise(answer)
    cells_holding = {cell.strip() for _, rows in _tables(passage) for row in rows for cell in row
                     if claim in normalise(cell)}
    if len(cells_holding) != 1:
        return None
    cell = cells_holding.pop()
    return cell if normalise(cell) != claim else None


def _wrong_column(claim: str, passage: str, question: str, min_coverage: float,
                  subject: str = "") -> str | None:
    """When the claim is one row's cell under another column than the one the question names
    ('经销商价' asked, the 建议零售价 cell given): that column's cell, quoted with its name. The
    question must name exactly one column besides the first (the rows' key). When several rows
    hold the claim, the one keyed by the model `subject` names (the question, or for a follow-up
    the conversation's) is the row read."""
    plain_question = normalise(question)
    keys = _key_patterns(subject or question)
    for header, rows in _tables(passage):
        asked = [i for i, name in enumerate(header)
                 if i and len(normalise(name)) >= 2 and normalise(name) in plain_question]
        holding = [row for row in rows if len(row) == len(header) and any(
            _holds(claim, normalise(cell), plain_question, min_coverage) for cell in row)]
        keyed = [rows[i] for i in _keyed_rows(rows, keys)]
        if len(holding) > 1 and len(keyed) == 1 and keyed[0] in holding:
            holding = keyed
        if len(asked) != 1 or len(holding) != 1:
            continue
        row, column = holding[0], asked[0]
        if row[column].strip() and not _holds(claim, normalise(row[column]), plain_question,
                                               min_coverage):
            return f"{header[column]}：{row[column]}"
    return None


@dataclass(frozen=True)
class Support:
    """How well one answer is supported by the passages it was given."""

    supported: bool
    passage: int | None     # index of the passage that supports it best
    coverage: float         # share of its characters found there (see _coverage)
    missing_numbers: tuple[str, ...]  # its numbers (with units) found in no single passage
    span: str | None        # the passage clause (or the table row) that best supports it, if any
    wrong_row: bool = False  # it was read off a table row the question is not about
    wrong_column: bool = False  # it was read off another column than the one the question names
    # the question's identifiers that no passage supporting the answer names (its text, file
    # name or heading): the answer is about something else
    foreign: tuple[str, ...] = ()
    # why the answer is not the kind of thing the question asks for (kbqa.qa.answer_kinds)
    mismatch: str | None = None
    # a bare number completed with the unit its passage writes after it ('3' → '3个工作日'), or
    # a bare yes or no with the sentence that says it
    completed: str | None = None
    # it was read off another clause of its sentence than the one the question is about, or off
    # a sentence about something else (kbqa.qa.clauses)
    wrong_clause: bool = False
    off_topic: bool = False


def _judge(claim: str, question: str, passages: list[str],
           min_coverage: float) -> tuple[bool, int | None, float, tuple[str, ...]]:
    numbers = _numbers(claim)
    best: tuple[bool, int | None, float, tuple[str, ...]] = (False, None, 0.0, tuple(
        number + unit for number, unit in numbers))
    for index, passage in enumerate(passages):
        missing = tuple(number + unit for number, unit in numbers
                        if not _holds_number(passage, number, unit))
        missing += unit_conflicts(claim, passage)
        coverage = _coverage(claim, passage, question)
        ok = not missing and coverage >= min_coverage
        if (ok, -len(missing), coverage) > (best[0], -len(best[3]), best[2]):
            best = (ok, index, coverage, missing)
    return best


def _best_clause(claim: str, question: str, passages: list[str]) -> str | None:
    """The clause (sentence or table row) that holds most of the claim; None under
    MIN_SPAN_COVERAGE. Ties go to the clause sharing more with the question."""
    scored = []
    for passage in passages:
        for piece in _CLAUSE_END.split(passage):
            clause = piece.strip()
            plain = normalise(clause)
            if not plain:
                continue
            numbers = _numbers(claim)
            held = sum(_holds_number(plain, n, u) for n, u in numbers) / len(numbers) if numbers else 1.0
            score = min(held, _coverage(claim, plain, ""))
            scored.append((score, _coverage(normalise(question), plain, ""), clause))
    if not scored:
        return None
    score, _, clause = max(scored, key=lambda item: item[:2])
    return clause if score >= MIN_SPAN_COVERAGE else None


def _clauses(passage: str) -> list[str]:
    """A passage's sentences, and its table rows quoted with their column names."""
    rows = [_row_text(header, row) for header, body in _tables(passage) for row in body]
    prose = [line for line in passage.splitlines() if not is_table_line(line.strip())]
    # a heading's question mark ends a sentence before its bracket: '【…？】' leaves '】' behind
    sentences = [piece.strip().lstrip(_LEFT_BEHIND).strip()
                 for piece in _CLAUSE_END.split("\n".join(prose))]
    sentences = [sentence for sentence in sentences if sentence]
    return sentences + rows


def _foreign(claims: set[str], question: str, passages: Sequence[str], plain_passages: list[str],
             names: Sequence[str], min_coverage: float,
             titles: Sequence[str] = (), library: Sequence[str] = ()
             ) -> tuple[tuple[str, ...], int | None]:
    """The question's identifiers and name terms (`name_terms` of the file names) when no
    passage that supports a claim names them all (in its text or its name), else () and the
    first passage that does (None when the question names nothing). The places it names must
    stand in some passage, not necessarily the supporting one: a text about China seldom writes
    中国."""
    everywhere = _with_names(passages, names, titles)
    absent = [normalise(place) for place in place_names(question)
              if not any(_names_all([normalise(place)], text) for text in everywhere)]
    if absent:
        return tuple(absent), None
    words = _named_words(question, titles, library)
    if not words:
        return (), None
    plain_question = normalise(question)
    for index, (plain, where) in enumerate(zip(plain_passages, everywhere, strict=True)):
        if any(_holds(claim, plain, plain_question, min_coverage) for claim in claims) and \
                _names_all(words, where):
            return (), index
    return tuple(words), None


def _clause_holding(claim: str, passage: str) -> str:
    """The first clause (sentence or table row) of the passage that holds the claim; '' when
    none holds it whole."""
    return next((clause for clause in _clauses(passage) if claim in normalise(clause)), "")


def _with_names(passages: Sequence[str], names: Sequence[str],
                titles: Sequence[str]) -> list[str]:
    """Each passage with its document's name and heading and its file name after it: where a
    question's identifier or company may stand."""
    return [" ".join([passage, names[index] if index < len(names) else "",
                      titles[index] if index < len(titles) else ""])
            for index, passage in enumerate(passages)]


def _named_words(question: str, titles: Sequence[str], library: Sequence[str]) -> list[str]:
    """What a passage must name to be about what the question is: its identifiers and the
    company or product runs of the file names (`name_terms`)."""
    return identifiers(question) + name_terms(question, [*titles, *library])


def _naming(passages: Sequence[str], names: Sequence[str], titles: Sequence[str],
            words: list[str]) -> list[str]:
    """The passages that name all `words` in their text, document name or file name (all of
    them when there are no words)."""
    return [passage for passage, where in zip(passages, _with_names(passages, names, titles),
                                              strict=True)
            if _names_all(words, where)]


def _named_clause(foreign: tuple[str, ...], question: str, passages: Sequence[str],
                  names: Sequence[str], titles: Sequence[str], asked: str,
                  read_off: str) -> str | None:
    """For an answer read off another company's or product's passage (`read_off`, the clause it
    was read from), what a passage that does name them (`foreign`) says: the table row keyed by
    the question's model when the question (`asked`, not the earlier one a follow-up is read
    with) names one of the table's columns, else the clause that writes the kind of quantity the
    question asks for (kbqa.qa.answer_kinds.clause_of_kind) and shares as many of its words as
    `read_off` does: a near miss ("加班餐费" for "打车") is not the same rule in another company's
    words. None when there is neither."""
    named = _naming(passages, names, titles, list(foreign))
    keys, plain_question = _key_patterns(question), normalise(asked)
    for passage in named:  # a spec table's row keyed by the model, when a column is asked
        for header, rows in _tables(passage):
            keyed = _keyed_rows(rows, keys)
            if len(keyed) == 1 and any(len(normalise(name)) >= 2 and normalise(name) in
                                       plain_question for name in header[1:]):
                return _row_text(header, rows[keyed[0]])
    if not asked_kinds(question):
        return None
    clauses = [clause for passage in named for clause in _clauses(passage)]
    at_least = shared_words(question, read_off)
    return clause_of_kind(question, clauses, at_least) if clauses else None


_FOLLOW_UP = re.compile(r"^那|它|呢[\s?？]*$")


def subject_of(question: str, earlier: str, titles: Sequence[str] = ()) -> str:
    """What the identifier and row checks read: a follow-up that names nothing itself ('那它的
    重量呢？') is about what the earlier question named, so that question goes in front."""
    if earlier and _FOLLOW_UP.search(question) and not identifiers(question) \
            and not name_terms(question, titles):
        return f"{earlier} {question}"
    return question


def check_support(answer: str, passages: Sequence[str], question: str = "",
                  min_coverage: float = MIN_COVERAGE, names: Sequence[str] = (),
                  titles: Sequence[str] = (), earlier: str = "",
                  library: Sequence[str] = ()) -> Support:
    """Whether `answer` is supported by one of `passages` (see the module's docstring); `names`
    are the passages' document names and headings, where a question's identifier may stand;
    `titles` their file names without the extension (see `name_terms`); `earlier` the
    conversation's last question (see `subject_of`)."""
    subject = subject_of(question, earlier, [*titles, *library])
    says = polarity(answer) if yes_no(question) else None
    if says is not None:
        return _yes_or_no(says, answer, passages, question, subject, min_coverage, names,
                          titles, earlier, library)
    plain_passages = [normalise(p) for p in passages]
    plain_question = normalise(question)
    claims = {normalise(answer), normalise(with_arabic_numerals(answer))}
    judged = max((_judge(claim, plain_question, plain_passages, min_coverage) for claim in claims),
                 key=lambda j: (j[0], -len(j[3]), j[2]))
    supported, index, coverage, missing = judged
    if supported:
        foreign, naming = _foreign(claims, subject, passages, plain_passages, names,
                                   min_coverage, titles, library)
        # the rows, clauses and units read are the passage's that names what the question does
        index = naming if naming is not None else index
        if foreign:
            read_off = _clause_holding(normalise(answer), passages[index])
            return Support(False, index, round(coverage, 3), missing,
                           _named_clause(foreign, subject, passages, names, titles, question,
                                         read_off), foreign=foreign)
    if supported and index is not None:
        row = _wrong_row(normalise(answer), passages[index], subject, min_coverage)
        if row is not None:
            return Support(False, index, round(coverage, 3), missing, row, wrong_row=True)
        elsewhere = _other_places_row(normalise(answer), passages[index], subject, min_coverage)
        if elsewhere:
            return Support(False, index, round(coverage, 3), missing, None, foreign=elsewhere)
        cell = _wrong_column(normalise(answer), passages[index], question, min_coverage,
                             subject)
        if cell is not None:
            return Support(False, index, round(coverage, 3), missing, cell, wrong_column=True)
        reason = mismatch(answer, question)
        if reason is not None:
            named = _naming(passages, names, titles, _named_words(subject, titles, library))
            clauses = [clause for passage in named for clause in _clauses(passage)]
            return Support(False, index, round(coverage, 3), missing,
                           clause_of_kind(question, clauses), mismatch=reason)
        if off_topic(answer, passages[index], question):
            return Support(False, index, round(coverage, 3), missing, None, off_topic=True)
        other = (other_clause(answer, passages[index], question)
                 or other_sentence(answer, passages[index], question))
        if other is not None:
            return Support(False, index, round(coverage, 3), missing, other, wrong_clause=True)
        return Support(True, index, round(coverage, 3), missing, None,
                       completed=with_unit(answer, question, _clauses(passages[index]))
                       or _whole_cell(answer, passages[index]))
    # a number the passages hold only with a unit of another kind: no clause says what it claims
    conflict = index is not None and unit_conflicts(normalise(answer), plain_passages[index])
    span = None if supported or conflict else _best_clause(normalise(answer), question,
                                                           list(passages))
    return Support(supported, index, round(coverage, 3), missing, span)


def _yes_or_no(says: bool, answer: str, passages: Sequence[str], question: str, subject: str,
               min_coverage: float, names: Sequence[str], titles: Sequence[str],
               earlier: str, library: Sequence[str]) -> Support:
    """A bare yes or no holds no words to look for: the sentence that shares the most question
    words (at least MIN_SHARED) stands for it, checked as an answer would be, and the answer is
    given with it ('否。试用期员工不得申请远程办公。'); only the sentence, when it says the opposite."""
    named = _naming(passages, names, titles, _named_words(subject, titles, library))
    sentence = clause_of_kind(question, [clause for passage in named
                                         for clause in _clauses(passage)])
    if sentence is None:
        return Support(False, None, 0.0, (), None)
    support = check_support(sentence, passages, question, min_coverage, names, titles, earlier,
                            library)
    if not support.supported or support.passage is None:
        return support
    where = _with_names(passages, names, titles)[support.passage]
    if not about_subject(subject, where):  # about something else: another company's rule, say
        return Support(False, support.passage, support.coverage, (), None,
                       foreign=tuple(word for word in question_words(subject)
                                     if word not in normalise(where).replace(GAP, "")))
    answer = answer.strip().rstrip("。.!！")
    completed = f"{answer}。{sentence}" if says_no(sentence) != says else sentence
    return Support(True, support.passage, support.coverage, (), None, completed=completed)


@dataclass(frozen=True)
class Grounding:
    """What the grounding step did to one answer: the model's draft, the answer given, and why."""

    draft: str
    text: str
    action: Literal["kept", "span", "refused", "unchecked"]
    support: Support | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ground(draft: str, passages: Sequence[str], question: str, policy: Policy,
           min_coverage: float = MIN_COVERAGE, names: Sequence[str] = (),
           titles: Sequence[str] = (), earlier: str = "",
           library: Sequence[str] = ()) -> Grounding:
    """Apply `policy` to the model's draft: a refusal, an empty context or policy 'off' is left as
    it is; a supported answer is kept; an unsupported one becomes its supporting span or a refusal.
    `names`, `titles`: each passage's document name and heading, and its file name without the
    extension; `earlier`: the conversation's last question (see check_support)."""
    from kbqa.qa.chain import is_refusal

    text = draft.strip()
    if policy == "off" or not passages or not text or is_refusal(text):
        return Grounding(draft, text, "unchecked", None)
    support = check_support(text, passages, question, min_coverage, names, titles, earlier,
                            library)
    if support.supported:
        return Grounding(draft, support.completed or text, "kept", support)
    if policy == "span" and support.span:  # None for an answer about another identifier
        return Grounding(draft, support.span, "span", support)
    return Grounding(draft, REFUSAL, "refused", support)
