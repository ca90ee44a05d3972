"""Which clause of its sentence an answer was read off, and whether the question is about that
clause. A sentence often says two things about one subject ("滤网：建议每2周清洗一次，每3个月更换
一次"), and a small model takes the quantity from the wrong half ("滤网多久更换一次？" → "每2周"); or
it lifts a number from a sentence about something else ("会员积分的有效期" → the 15 days of an
exchange rule). Both are read from the question's words: the clauses of the answer's sentence that
hold more of them, and whether its sentence holds any.

A question's words are its character pairs and Latin words, its interrogatives left out; a clause
that only restates the question's condition ("连续休假超过5天的") is no answer to it. A bare yes
or no is about the question's subject only when its sentence's passage holds most of those words
(`about_subject`).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from kbqa.ingest.tables import is_table_line
from kbqa.kb.lexical import query_tokens
from kbqa.qa.answer_kinds import asked_kinds, holds_kind

_SENTENCE_END = re.compile(r"(?<=[。！？!?\n])")
_CLAUSE_END = re.compile(r"(?<=[，,；;])")
# a sentence's label: the subject its clauses share ("滤网：")
_LABEL = re.compile(r"^\s*([^：:，,。；;\n]{1,12})[：:]")
_KEPT = re.compile(r"[0-9a-z\u3400-\u9fff]+")
RESTATES = 0.8  # share of a clause's characters the question holds when it only restates it
MIN_WORDS = 2   # question words below which no sentence is judged off topic: one is chance
CONTEXT = 2     # sentences before the answer's that may name its subject ('许国佐，又名…。…人。')
# a list item ('第3条 …', '3. …', '- …', '（二）…') stands alone: the item before is about another
# thing (an FAQ's '答：…' is no item: it answers the question before it)
_ITEM = re.compile(r"^\s*(?:第[0-9一二三四五六七八九十百]+[条章节款项]|\d+[.、)）]|[-*•·]\s"
                   r"|[（(]?[一二三四五六七八九十]+[、)）])")


def _plain(text: str) -> str:
    return "".join(_KEPT.findall(unicodedata.normalize("NFKC", text).lower()))


@lru_cache(maxsize=4096)
def question_words(question: str) -> tuple[str, ...]:
    """The question's character pairs and Latin words, its interrogatives left out, each once:
    pairs, not a segmenter's words, which split "年假有几天" as "后年 / 假有"."""
    return tuple(dict.fromkeys(token for token in query_tokens(question) if len(token) >= 2))


def _sentences(passage: str) -> list[str]:
    return [piece for piece in _SENTENCE_END.split(passage)
            if _plain(piece) and not is_table_line(piece.strip())]


def _restates(clause: str, question: str) -> bool:
    text, asked = _plain(clause), set(_plain(question))
    return bool(text) and sum(char in asked for char in text) / len(text) >= RESTATES


def other_clause(answer: str, passage: str, question: str) -> str | None:
    """The clause of the answer's sentence that the question is about, when the answer was read
    off another one; None when its own clause may be the one, in any sentence that holds it.

    The better clause must hold every question word the answer's clause holds (its label aside)
    and more, and be the only such clause; when the question asks a kind of quantity
    (kbqa.qa.answer_kinds) it must write one. The answer's clause stands when it, or the clause
    before it, restates the question's condition ("满10年不满20年的，每年10天")."""
    target, words, kinds = _plain(answer), question_words(question), asked_kinds(question)
    if not target or not words or not kinds:
        return None
    found = None
    for sentence in _sentences(passage):
        if target not in _plain(sentence):
            continue
        better = _better_clause(target, sentence, words, kinds, question)
        if better is None:
            return None
        found = found or better
    return found


def _better_clause(target: str, sentence: str, words: tuple[str, ...], kinds: frozenset[str],
                   question: str) -> str | None:
    label = _LABEL.match(sentence)
    body = sentence[label.end():] if label else sentence
    clauses = [clause for clause in _CLAUSE_END.split(body) if _plain(clause)]
    holding = [i for i, clause in enumerate(clauses) if target in _plain(clause)]
    if len(clauses) < 2 or not holding:
        return None  # the answer runs across clauses: it is not one clause's
    own = holding[0]
    if any(_restates(clauses[i], question) for i in (own - 1, own) if i >= 0):
        return None
    held = [{word for word in words if word in _plain(clause)} for clause in clauses]
    rivals = [i for i, clause in enumerate(clauses)
              if i != own and held[i] > held[own] and not _restates(clause, question)
              and holds_kind(clause, kinds)]
    if len(rivals) != 1:
        return None
    chosen = clauses[rivals[0]].strip().strip("，,；;。")
    return f"{label.group(1).strip()}：{chosen}" if label else chosen


SENTENCE_MARGIN = 2  # question words another sentence must hold beyond the answer's: one is chance


def other_sentence(answer: str, passage: str, question: str) -> str | None:
    """The sentence of the passage that the question is about, when the answer was read off
    another: one that writes the asked kind of quantity and holds SENTENCE_MARGIN more question
    words than any sentence holding the answer, the only one that does ("晚上工作到20:00以后的，可
    报销加班餐费" asked "工作到几点以后可以报销加班餐", not "加班至22:00以后，打车回家的费用可以凭票
    报销"); None when the question asks no kind."""
    target, words, kinds = _plain(answer), question_words(question), asked_kinds(question)
    if not target or not words or not kinds:
        return None
    sentences = _sentences(passage)
    scores = [sum(word in _plain(sentence) for word in words) for sentence in sentences]
    own = [score for sentence, score in zip(sentences, scores, strict=True)
           if target in _plain(sentence)]
    if not own:
        return None
    rivals = [(score, sentence) for sentence, score in zip(sentences, scores, strict=True)
              if target not in _plain(sentence) and holds_kind(sentence, kinds)
              and score >= max(own) + SENTENCE_MARGIN]
    best = max((score for score, _ in rivals), default=0)
    chosen = [sentence for score, sentence in rivals if score == best]
    return chosen[0].strip() if len(chosen) == 1 else None


def off_topic(answer: str, passage: str, question: str) -> bool:
    """Whether every sentence of the passage that holds the answer holds none of the question's
    words, nor do the CONTEXT sentences before it (unless it starts a list item); False when the
    question has fewer than MIN_WORDS words or no one sentence holds the answer."""
    target, words = _plain(answer), question_words(question)
    if not target or len(words) < MIN_WORDS:
        return False
    sentences = _sentences(passage)
    holding = False
    for index, sentence in enumerate(sentences):
        if target not in _plain(sentence):
            continue
        holding = True
        first = index if _ITEM.match(sentence) else max(0, index - CONTEXT)
        context = "".join(_plain(text) for text in sentences[first:index + 1])
        if any(word in context for word in words):
            return False
    return holding


SUBJECT_SHARE = 0.8  # of a yes/no question's words its sentence's passage must hold: a pair in
# five may straddle two words the passage writes apart ('员工可以申请' / '员工不得申请')


def about_subject(question: str, where: str) -> bool:
    """Whether `where` (a passage with its document's name) holds SUBJECT_SHARE of the question's
    words: what a yes or no must be about."""
    words = question_words(question)
    text = _plain(where)
    return not words or sum(word in text for word in words) / len(words) >= SUBJECT_SHARE
