"""jieba's word segmenter and part-of-speech tagger, shared by the checks that read a question's
words (kbqa.qa.places, kbqa.qa.clauses): loaded once on first use, not at import."""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _tagger():  # noqa: ANN202  (jieba's POSTokenizer has no public type)
    """jieba's tagger with a dictionary of its own (about half a second to load)."""
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    return jieba.posseg.POSTokenizer(jieba.Tokenizer())


@lru_cache(maxsize=4096)
def tagged(text: str) -> tuple[tuple[str, str], ...]:
    """(word, part-of-speech flag) for each word of `text`, in order."""
    with _LOCK:  # jieba's tokenizer initialises lazily and is not thread-safe while it does
        return tuple((pair.word, pair.flag) for pair in _tagger().cut(text))
