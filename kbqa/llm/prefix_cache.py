"""Reuse the key/value cache of the previous prompt's shared prefix (prefill is most of the wait).

On CPU, time to first token is the prompt's forward pass. Consecutive prompts often share a
long prefix: the chat template and instructions always, the passages too when a follow-up
question retrieves the same ones, and all of it when a question is asked again. Keeping the
last prompt's cache and cropping it to the common prefix skips recomputing that part.

One entry per model state: `key` names the weights in use (the model object and its active
adapters), so a cache made with one adapter set is never read with another. A cache is taken
out while a generation uses it (generation extends it in place) and put back afterwards, so
two concurrent generations never share one; the second simply computes in full.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

MIN_REUSE_TOKENS = 16  # below this, cropping and bookkeeping cost about what they save


class PrefixCache:
    """The last prompt's token ids and its key/value cache, for each model state."""

    def __init__(self, max_entries: int = 2) -> None:
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[list[int], Any]] = {}
        self._lock = threading.Lock()
        self.reused_tokens = 0  # totals, for benchmarks and tests
        self.computed_tokens = 0

    def take(self, key: Hashable, ids: list[int]) -> tuple[Any, int]:
        """A cache holding the longest stored prefix of `ids` (at most len(ids) - 1 tokens, so
        the model still sees the last one) and its length; (None, 0) when nothing useful is kept."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None:
            return None, 0
        stored, cache = entry
        shared = _common_prefix(stored, ids, limit=len(ids) - 1)
        if shared < MIN_REUSE_TOKENS or not cache.is_croppable:
            return None, 0
        _crop_to(cache, shared)
        return cache, shared

    def put(self, key: Hashable, ids: list[int], cache: Any) -> None:
        """Keep `cache` (cropped to the prompt `ids`) as this state's entry; oldest state evicted."""
        if not cache.is_croppable:
            return
        _crop_to(cache, len(ids))
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (ids, cache)
            while len(self._entries) > self.max_entries:
                self._entries.pop(next(iter(self._entries)))

    def count(self, reused: int, total: int) -> None:
        with self._lock:
            self.reused_tokens += reused
            self.computed_tokens += total - reused

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _crop_to(cache: Any, length: int) -> None:
    """Keep the first `length` positions (transformers' crop takes how many to drop, negated)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of two token id lists, capped at `limit`."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return max(n, 0)


def is_prompt_learning(model: Any) -> bool:
    """Whether `model` is a peft model whose active adapter is a prefix (prompt learning): it puts
    its virtual tokens' keys and values into the cache itself, and only into an empty one, so a
    cache handed to generate() from outside would silently drop the prefix."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))
