"""The place names a question names ('长沙', '西安'), found by jieba's part-of-speech tagger: an
answer read off another city's row or passage is about somewhere else, as an answer read off
another product's passage is about something else (kbqa.qa.grounding)."""

from __future__ import annotations

from functools import lru_cache

from kbqa.qa.tagging import tagged

_PLACE_TAG = "ns"
MIN_PLACE_CHARS = 2  # one-character "places" (省, 京) are the tagger's noise
# the home country: Chinese documents seldom write it, a question often does ('中国对哪些原粮…')
_IMPLIED = frozenset({"中国", "我国", "全国", "国内", "中华"})
# abroad, which the tagger calls a location word, not a place: a domestic rule does not answer it
_ABROAD = frozenset({"海外", "国外", "境外"})


@lru_cache(maxsize=4096)
def place_names(question: str) -> tuple[str, ...]:
    """The question's place names and words for abroad, in order, each once (the home country
    left out)."""
    names = [word for word, flag in tagged(question) if word in _ABROAD or (
        flag == _PLACE_TAG and len(word) >= MIN_PLACE_CHARS and word not in _IMPLIED)]
    return tuple(dict.fromkeys(names))
