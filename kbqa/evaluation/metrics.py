"""CMRC 2018-style answer scoring (EM and F1), so kbqa's figures compare with published ones.

As in the official scorer: lower-case; EM compares the strings with punctuation
removed; F1 segments text into single CJK characters and runs of other
characters (words), drops punctuation, and counts the longest common
*substring* of the two token lists; scores are the max over the gold answers.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence

_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORD = re.compile(r"\d+(?:[.,]\d+)+|\w+|[^\w\s]")
CHINESE_PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》……·、「」（）－～『』‘【】〔〕｛｝—·！，．")
PUNCTUATION = CHINESE_PUNCTUATION | frozenset(string.punctuation)


def segment(text: str, drop_punctuation: bool = True) -> list[str]:
    """Mixed segmentation: each CJK character is a token; other runs split into words.

    Like the official scorer, only the Chinese-style punctuation set is dropped
    here; ASCII punctuation inside a run stays a token of its own.
    """
    tokens: list[str] = []
    run = ""
    for char in str(text).lower().strip():
        if drop_punctuation and char in CHINESE_PUNCTUATION:
            tokens.extend(_WORD.findall(run))
            run = ""
            continue
        if _CJK.match(char) or char in CHINESE_PUNCTUATION:
            tokens.extend(_WORD.findall(run))
            run = ""
            tokens.append(char)
        else:
            run += char
    tokens.extend(_WORD.findall(run))
    return tokens


def remove_punctuation(text: str) -> str:
    return "".join(char for char in str(text).lower().strip() if char not in PUNCTUATION)


def _longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0] * (len(b) + 1)
        for j, token_b in enumerate(b, start=1):
            if token_a == token_b:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def f1_score(prediction: str, answers: Iterable[str]) -> float:
    """Max over gold answers of the LCS-based F1 on mixed segmentation (0..1)."""
    predicted = segment(prediction)
    best = 0.0
    for answer in answers:
        gold = segment(answer)
        common = _longest_common_substring(gold, predicted)
        if common == 0:
            continue
        precision, recall = common / len(predicted), common / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 if the prediction equals a gold answer once punctuation is removed."""
    cleaned = remove_punctuation(prediction)
    return float(any(cleaned == remove_punctuation(answer) for answer in answers))


def _longest_common_subsequence(a: str, b: str) -> int:
    previous = [0] * (len(b) + 1)
    for char_a in a:
        current = [0]
        for j, char_b in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if char_a == char_b
                           else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, answers: Iterable[str]) -> float:
    """Character-level ROUGE-L F1 (longest common subsequence), punctuation removed, max over golds."""
    predicted = remove_punctuation(prediction).replace(" ", "")
    best = 0.0
    for answer in answers:
        gold = remove_punctuation(answer).replace(" ", "")
        common = _longest_common_subsequence(predicted, gold)
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best
