"""Lexical terms for BM25: the Chinese tokenizer and the per-chunk term counts the store persists.

Why term counts are stored per chunk (table ``bm25_terms``, written in the same transaction as the
chunk itself): BM25's global statistics (document frequency, average length) change with every
write, so precomputed per-term scores (what bm25s stores) cannot be updated in place. Raw term
counts can: adding a chunk adds its row, deleting one drops it (a trigger), and a reader scores
from counts at query time. Nothing is pickled; a row is two little-endian numpy arrays as blobs.

Terms are integers, not strings: a CJK bigram or unigram is its code points packed exactly into
42 bits; an ASCII word or number is a 60-bit BLAKE2 hash with bit 62 set, so the two kinds never
meet. Integers keep the reader's postings in plain numpy arrays.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

_TOKEN_RE = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]+|[0-9a-z]+")
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_WORD_FLAG = 1 << 62
_HASH_MASK = (1 << 60) - 1
COUNT_DTYPE = np.dtype("<u2")
TERM_DTYPE = np.dtype("<i8")


def tokenize(text: str) -> list[str]:
    """BM25 tokens: overlapping character bigrams of each CJK run, lowercase ASCII words and numbers.

    NFKC first, so full-width letters and digits (ＡＢＣ１２３) match their ASCII forms. A CJK run of
    one character is kept as a unigram so that single-character queries still match.
    """
    tokens: list[str] = []
    for run in _TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower()):
        if _CJK_RE.match(run):
            tokens.extend([run] if len(run) == 1 else
                          [run[i:i + 2] for i in range(len(run) - 1)])
        else:
            tokens.append(run)
    return tokens


def term_id(token: str) -> int:
    """The integer a token is stored as (exact for CJK, hashed for ASCII words)."""
    if _CJK_RE.match(token):
        return (ord(token[0]) << 21) | (ord(token[1]) if len(token) > 1 else 0)
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return _WORD_FLAG | (int.from_bytes(digest, "little") & _HASH_MASK)


def term_ids(tokens: list[str]) -> np.ndarray:
    """Term ids of `tokens`, in order, duplicates kept."""
    return np.fromiter((term_id(token) for token in tokens), dtype=TERM_DTYPE, count=len(tokens))


def term_counts(text: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(length in tokens, sorted distinct term ids, their counts) of a chunk's text."""
    ids = term_ids(tokenize(text))
    terms, counts = np.unique(ids, return_counts=True)
    return len(ids), terms, np.minimum(counts, np.iinfo(COUNT_DTYPE).max).astype(COUNT_DTYPE)


def encode_row(text: str) -> tuple[int, bytes, bytes]:
    """The (length, terms blob, counts blob) stored for a chunk."""
    length, terms, counts = term_counts(text)
    return length, terms.astype(TERM_DTYPE).tobytes(), counts.tobytes()


def decode_row(terms: bytes, counts: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode_row`'s blobs."""
    return np.frombuffer(terms, dtype=TERM_DTYPE), np.frombuffer(counts, dtype=COUNT_DTYPE)
