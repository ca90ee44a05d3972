"""The place names a question names ('长沙', '西安'), found by jieba's part-of-speech tagger: an
answer read off another city's row or passage is about somewhere else, as an answer read off
another product's passage is about something else (kbqa.qa.grounding)."""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

_LOCK = threading.Lock()
_PLACE_TAG = "ns"
MIN_PLACE_CHARS = 2  # one-character "places" (省, 京) are the tagger's noise
# the home country: Chinese documents seldom write it, a question often does ('中国对哪些原粮…')
_IMPLIED = frozenset({"中国", "我国", "全国", "国内", "中华"})
# abroad, which the tagger calls a location word, not a place: a domestic rule does not answer it
_ABROAD = frozenset({"海外", "国外", "境外"})


@lru_cache(maxsize=1)
def _tagger():  # noqa: ANN202  (jieba's POSTokenizer has no public type)
    """jieba's tagger, loaded once on first use (about half a second), not at import."""
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    return jieba.posseg.POSTokenizer(jieba.Tokenizer())


@lru_cache(maxsize=4096)
def place_names(question: str) -> tuple[str, ...]:
    """The question's place names and words for abroad, in order, each once (the home country
    left out)."""
    with _LOCK:  # jieba's tokenizer initialises lazily and is not thread-safe while it does
        pairs = list(_tagger().cut(question))
    names = [pair.word for pair in pairs if pair.word in _ABROAD or (
        pair.flag == _PLACE_TAG and len(pair.word) >= MIN_PLACE_CHARS and pair.word not in _IMPLIED)]
    return tuple(dict.fromkeys(names))
