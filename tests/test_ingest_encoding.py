"""decode_text: the encodings Chinese text files really come in, and binary files refused."""

from __future__ import annotations

import codecs

import pytest

from kbqa.errors import LoaderError
from kbqa.ingest.encoding import decode_text

SIMPLIFIED = "星河智能科技有限公司成立于2015年，总部位于杭州市。入职满一年的员工每年享有10天带薪年假。"
TRADITIONAL = "星河智能科技有限公司成立於2015年，總部位於杭州市。入職滿一年的員工每年享有10天帶薪年假。"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        (SIMPLIFIED, "utf-8"),
        (SIMPLIFIED, "utf-8-sig"),
        (SIMPLIFIED, "utf-16"),  # Python writes a byte-order mark
        (SIMPLIFIED, "gbk"),
        (SIMPLIFIED + "𠀀䶮", "gb18030"),  # characters only GB18030 (not GBK) can encode
        (TRADITIONAL, "big5"),
        (TRADITIONAL, "gbk"),  # traditional characters in a GBK file are still GBK
        ("报销须在30天内提交。", "gbk"),
        ("員工手冊（2024版）", "big5"),
    ],
)
def test_decodes_common_encodings(text: str, encoding: str) -> None:
    assert decode_text(text.encode(encoding), "f.txt") == text


def test_utf16_big_endian_with_bom() -> None:
    assert decode_text(codecs.BOM_UTF16_BE + SIMPLIFIED.encode("utf-16-be"), "f.txt") == SIMPLIFIED


@pytest.mark.parametrize("word", ["你好", "数据", "员工手册（2024版）", "第一章 总则"])
def test_short_gbk_texts(word: str) -> None:
    """Short GBK strings are where statistical detectors (charset-normalizer) pick Big5 or Korean."""
    assert decode_text(word.encode("gbk"), "f.txt") == word


@pytest.mark.parametrize("word", ["你好", "資料", "第一章 總則"])
def test_short_big5_texts(word: str) -> None:
    assert decode_text(word.encode("big5"), "f.txt") == word


def test_bom_is_not_part_of_the_text() -> None:
    assert decode_text(codecs.BOM_UTF8 + "年假".encode(), "f.txt") == "年假"


def test_newlines_are_normalised() -> None:
    assert decode_text("一\r\n二\r三\n四".encode("gbk"), "f.txt") == "一\n二\n三\n四"


def test_nul_bytes_mean_binary() -> None:
    with pytest.raises(LoaderError, match=r"^junk\.txt: looks like a binary file, not text$"):
        decode_text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "junk.txt")


def test_mostly_control_characters_mean_binary() -> None:
    with pytest.raises(LoaderError, match="binary"):
        decode_text(bytes(range(1, 32)) * 10 + b"abc", "junk.txt")


def test_invalid_utf16_after_bom_is_refused() -> None:
    with pytest.raises(LoaderError, match=r"bad\.txt"):
        decode_text(codecs.BOM_UTF16_LE + b"\x00\xd8a", "bad.txt")  # lone surrogate, odd length
