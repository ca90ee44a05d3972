"""Route unstructured's spaCy hook to an offline pipeline.

unstructured 0.27 classifies text with spaCy and, on first use, downloads ``en_core_web_sm`` from
GitHub; offline that raises ``RuntimeError: Failed to download spaCy model``. Its only loader is the
private, cached ``unstructured.nlp.tokenize._get_nlp`` (pinned: unstructured==0.27.32), which every
tokenize/pos-tag/sentence call goes through. We replace it with a blank multilingual pipeline plus a
rule-based sentencizer: nothing to download, and element types are not trusted for Chinese anyway.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from kbqa.errors import KbqaError

if TYPE_CHECKING:
    from spacy.language import Language


@lru_cache(maxsize=1)
def offline_pipeline() -> Language:
    """A blank multilingual spaCy pipeline with a sentencizer; built once per process."""
    import spacy

    nlp = spacy.blank("xx")
    nlp.add_pipe("sentencizer")
    return nlp


def install_offline_nlp() -> None:
    """Point unstructured's spaCy loader at :func:`offline_pipeline`; safe to call repeatedly."""
    from unstructured.nlp import tokenize

    current = getattr(tokenize, "_get_nlp", None)
    if current is offline_pipeline:
        return
    if current is None:
        raise KbqaError(
            "this unstructured version has no unstructured.nlp.tokenize._get_nlp hook; "
            "kbqa is tested with unstructured==0.27.32"
        )
    tokenize._get_nlp = offline_pipeline  # private hook: see the module docstring
    # Results cached before the switch (none normally: the download would have failed) are dropped.
    for cached in (
        tokenize._process_cached,
        tokenize._tokenize_for_cache,
        tokenize.word_tokenize,
        tokenize.pos_tag,
    ):
        cached.cache_clear()
