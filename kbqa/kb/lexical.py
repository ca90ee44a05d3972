"""Lexical terms for BM25: the Chinese tokenizer and the per-chunk term counts the store persists.

Why term counts are stored per chunk (table ``bm25_terms``, written in the same transaction as the
chunk itself): BM25's global statistics (document frequency, average length) change with every
write, so precomputed per-term scores (what bm25s stores) cannot be updated in place. Raw term
counts can: adding a chunk adds its row, deleting one drops it (a trigger), and a reader scores
from counts at query time. Nothing is pickled; a row is two little-endian numpy arrays as blobs.

Terms are integers, not strings: a CJK bigram or unigram is its code points packed exactly into
42 bits; an ASCII word or number is a 60-bit BLAKE2 hash with bit 62 set, so the two kinds never
meet. Integers keep the reader's postings in plain numpy arrays.

Rows are versioned because counts made by one tokenizer are wrong for another: the store keeps
TOKENIZER_VERSION in each row's `tokenizer` column (absent or 1 = bigrams only). The blobs keep
version 1's layout, so an older kbqa still reads a base this one wrote, and a row it adds there
gets the column's default, 1, and is counted again from its text here.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np

# 2: CJK unigrams + bigrams (1: bigrams only). Adding unigrams put the answer in the top-1 chunk
# more often on CMRC 2018 train, and jieba words did not beat it (docs/benchmarks.md §Retrieval
# tuning). 3: the chunk's file name is counted with its text (`searchable_text`).
TOKENIZER_VERSION = 3
_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2EBEF))
_CJK_CLASS = "".join(f"{chr(low)}-{chr(high)}" for low, high in _CJK_RANGES)
_TOKEN_RE = re.compile(rf"[{_CJK_CLASS}]+|[0-9a-z]+")
_WORD_RE = re.compile("[0-9a-z]+")
_CJK_RE = re.compile(rf"[{_CJK_CLASS}]")
# Interrogatives say what kind of answer is wanted, not where it is: a passage never contains
# 哪一年, 是谁 or 几点. Multi-character words only, so names such as 哪吒 or 谁家 stay searchable;
# 几 only before a measure word (not 几乎, 几何, 茶几), not 多大 or 多重 (多伦多大学, 多重国籍), and
# the particles 吗 and 呢 only where they end the question (吗啡 stays).
_QUESTION_WORDS = re.compile(
    "为什么|为何|什么|哪个|哪些|哪里|哪儿|哪一|哪位|哪年|哪几个|哪几|哪种|哪家|哪天|多少|怎么|怎样|如何|是谁|"
    "何时|何地|何处|何种|多久|多长|多高|多远|多宽|多深|多厚|是否|能否|可否|有没有|是不是|能不能|"
    "会不会|第几|几[点天个年月日号次位岁种名条项家层楼分秒周倍届代座所部本首场节张台辆件句]|"
    "[吗呢](?=[\\s?？!！。]*$)")
_WORD_FLAG = 1 << 62
_HASH_MASK = (1 << 60) - 1
COUNT_DTYPE = np.dtype("<u2")
TERM_DTYPE = np.dtype("<i8")


def tokenize(text: str) -> list[str]:
    """BM25 tokens: each CJK character and each overlapping pair, lowercase ASCII words and numbers.

    Bigrams carry the phrases; unigrams let a one-character word (省, 鱼) match whatever its
    neighbours are. NFKC first, so full-width letters and digits (ＡＢＣ１２３) match their
    ASCII forms.
    """
    tokens: list[str] = []
    for run in _TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower()):
        if _CJK_RE.match(run):
            tokens.extend(run)
            tokens.extend(run[i:i + 2] for i in range(len(run) - 1))
        else:
            tokens.append(run)
    return tokens


def query_tokens(question: str) -> list[str]:
    """Tokens of a question with its interrogative words taken out (see `_QUESTION_WORDS`)."""
    return tokenize(_QUESTION_WORDS.sub(" ", question))


def term_id(token: str) -> int:
    """The integer a token is stored as (exact for CJK, hashed for ASCII words)."""
    if _CJK_RE.match(token):
        return (ord(token[0]) << 21) | (ord(token[1]) if len(token) > 1 else 0)
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return _WORD_FLAG | (int.from_bytes(digest, "little") & _HASH_MASK)


def term_ids(tokens: list[str]) -> np.ndarray:
    """Term ids of `tokens`, in order, duplicates kept."""
    return np.fromiter((term_id(token) for token in tokens), dtype=TERM_DTYPE, count=len(tokens))


def text_term_ids(text: str) -> np.ndarray:
    """`term_ids(tokenize(text))` up to order, without building a string per token: the CJK
    unigrams and bigrams come from the code points in one numpy pass (faster on Chinese chunks,
    docs/benchmarks.md §Ingest and embedding speed; this runs for every chunk ingested)."""
    normalised = unicodedata.normalize("NFKC", text).lower()
    codes = np.frombuffer(normalised.encode("utf-32-le"), dtype="<u4").astype(np.int64)
    cjk = np.zeros(len(codes), dtype=bool)
    for low, high in _CJK_RANGES:
        cjk |= (codes >= low) & (codes <= high)
    pairs = cjk[:-1] & cjk[1:]
    words = [term_id(word) for word in _WORD_RE.findall(normalised)]
    return np.concatenate([codes[cjk] << 21, (codes[:-1][pairs] << 21) | codes[1:][pairs],
                           np.array(words, dtype=np.int64)])


def term_counts(text: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(length in tokens, sorted distinct term ids, their counts) of a chunk's text."""
    ids = text_term_ids(text)
    terms, counts = np.unique(ids, return_counts=True)
    return len(ids), terms, np.minimum(counts, np.iinfo(COUNT_DTYPE).max).astype(COUNT_DTYPE)


def searchable_text(text: str, metadata: Mapping[str, object]) -> str:
    """What BM25 and the coverage gate read of a chunk: its document's file name (without the
    extension), then its text. A company's documents often name their subject only in the file
    name ('青禾科技常见问题.md', 'R2用户手册.docx'): without it, every company's FAQ answers
    '以旧换新最多抵多少钱？' equally well."""
    name = file_stem(metadata)
    return f"{name}\n{text}" if name else text


def file_stem(metadata: Mapping[str, object]) -> str:
    """A chunk's file name without its extension ('' when it has none)."""
    return PurePath(str(metadata.get("filename") or "")).stem


def encode_row(text: str) -> tuple[int, bytes, bytes]:
    """The (length, terms blob, counts blob) stored for a chunk."""
    length, terms, counts = term_counts(text)
    return length, terms.astype(TERM_DTYPE).tobytes(), counts.tobytes()


def decode_row(terms: bytes, counts: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode_row`'s blobs: (term ids, counts)."""
    return np.frombuffer(terms, dtype=TERM_DTYPE), np.frombuffer(counts, dtype=COUNT_DTYPE)
