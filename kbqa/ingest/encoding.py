"""Decode text files whose encoding nobody wrote down: UTF-8/16, GB18030/GBK or Big5.

charset-normalizer alone often misjudges short Chinese texts (a few hundred bytes of GBK can come
back as Big5 or a Cyrillic code page), so the Chinese code pages are decided here by which decoding
yields more *common* Chinese characters; charset-normalizer is only the last resort.
"""

from __future__ import annotations

import codecs
import contextlib
import unicodedata
from functools import lru_cache

from charset_normalizer import from_bytes

from kbqa.errors import LoaderError

# Both code pages decode most byte strings strictly, so "which one decodes" rarely settles it.
_CHINESE_CODECS = ("gb18030", "cp950")  # cp950: Big5 plus the Windows extensions found in practice
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_MAX_CONTROL_RATIO = 0.05
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v\x1b")


@lru_cache(maxsize=1)
def _common_chinese() -> frozenset[str]:
    """GB2312 level-1 (3,755 simplified) plus Big5 frequent (5,401 traditional) characters + punctuation.

    A wrong guess between GB18030 and Big5 turns text into rare characters, private-use code
    points, kana or box-drawing symbols, so the share of these characters tells the right one.
    """
    chars: set[str] = set("，。、；：？！“”‘’（）《》【】「」『』…—")
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            _add_decoded(chars, bytes((lead, trail)), "gb2312")
    for lead in range(0xA4, 0xC7):
        for trail in [*range(0x40, 0x7F), *range(0xA1, 0xFF)]:
            _add_decoded(chars, bytes((lead, trail)), "big5")
    return frozenset(chars)


def _add_decoded(chars: set[str], pair: bytes, encoding: str) -> None:
    with contextlib.suppress(UnicodeDecodeError):  # unassigned code points in the range
        chars.add(pair.decode(encoding))


def _chinese_score(text: str) -> float:
    """Share of non-ASCII characters that are common Chinese characters or punctuation."""
    wide = [ch for ch in text if ord(ch) > 0x7F]
    if not wide:
        return 1.0
    common = _common_chinese()
    return sum(ch in common for ch in wide) / len(wide)


def _decode_chinese(data: bytes) -> str | None:
    """Strict GB18030 or Big5, whichever reads as more common Chinese; None if neither decodes."""
    best: tuple[float, str] | None = None
    for encoding in _CHINESE_CODECS:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        score = _chinese_score(text)
        if best is None or score > best[0]:  # ties keep GB18030, the more common one
            best = (score, text)
    return best[1] if best else None


def _decode(data: bytes, name: str) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise LoaderError(
                    f"{name}: starts with a {encoding} byte-order mark but is not valid {encoding}"
                ) from exc
    if b"\x00" in data:
        raise _binary(name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = _decode_chinese(data)
    if text is not None:
        return text
    guess = from_bytes(data).best()
    if guess is None:
        raise _binary(name)
    return str(guess)


def _binary(name: str) -> LoaderError:
    return LoaderError(f"{name}: looks like a binary file, not text")


def _mostly_control(text: str) -> bool:
    controls = sum(unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS for ch in text)
    return controls > _MAX_CONTROL_RATIO * max(len(text), 1)


def decode_text(data: bytes, source: str) -> str:
    """Decode a text file's bytes with newlines normalised to "\\n".

    ``source`` names the file in error messages. Raises LoaderError for binary data.
    """
    text = _decode(data, source)
    if _mostly_control(text):
        raise _binary(source)
    return text.replace("\r\n", "\n").replace("\r", "\n")
