"""Chinese numerals as digits ('两天' → '2天'), so an answer, a question and a passage that write
one number two ways compare equal (kbqa.qa.grounding, kbqa.qa.answer_kinds)."""

from __future__ import annotations

import re

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}
_CN_SCALES = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_CN_NUMBER = re.compile(f"(?<![0-9.])[{''.join(_CN_DIGITS)}{''.join(_CN_SCALES)}]+")


def _chinese_number(word: str) -> int | None:
    """'十五' → 15, '两' → 2, '三千' → 3000; None when the word is not a plain numeral."""
    total, digit = 0, None
    for char in word:
        if char in _CN_DIGITS:
            if digit is not None:  # "一二" is not a number this reads
                return None
            digit = _CN_DIGITS[char]
        else:
            total += (1 if digit is None else digit) * _CN_SCALES[char]
            digit = None
    return total + (digit or 0)


def with_arabic_numerals(text: str) -> str:
    """Chinese numerals written as digits ('两天' → '2天'), so they compare with the passages'."""
    def replace(match: re.Match[str]) -> str:
        value = _chinese_number(match.group())
        return match.group() if value is None else str(value)

    return _CN_NUMBER.sub(replace, text)
