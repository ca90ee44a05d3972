"""A cited passage as a reader checks it: prose cut short, a table kept as a table (its header and
the rows the question is about), the answer's words marked, and document text never read as markup.

A snippet is plain text with newlines: prose is one line; a table is its Markdown lines as the
loaders wrote them (kbqa/ingest/tables.py), so the server can hand it on as is, the web app can
render it as a Markdown table and the CLI can align its columns.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from rich.cells import cell_len

from kbqa.ingest.tables import is_separator, is_table_line
from kbqa.kb.lexical import query_tokens, tokenize

SNIPPET_CHARS = 120      # prose: what a reader takes in at a glance
TABLE_ROWS = 5           # table: at most this many body rows besides the header
TABLE_CHARS = 600        # table: header and rows together; a row that does not fit is left out
HIGHLIGHT_MIN_CHARS = 4  # a shorter common span is chance, not the answer
ELLIPSIS = "…"

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_UNIT = re.compile(r"[0-9A-Za-z]+|.", re.DOTALL)
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _clip(text: str, limit: int = SNIPPET_CHARS) -> str:
    text = " ".join(text.split())
    return text[:limit] + (ELLIPSIS if len(text) > limit else "")


def _find_table(lines: list[str]) -> int | None:
    """Index of the first table's header line: a row line followed by a separator line."""
    for index in range(len(lines) - 1):
        if is_table_line(lines[index]) and is_separator(lines[index + 1]):
            return index
    return None


def cells(row: str) -> list[str]:
    """A Markdown table row's cell texts, an escaped "\\|" back to "|"."""
    inner = row.strip()[1:-1]
    return [cell.strip().replace("\\|", "|") for cell in _UNESCAPED_PIPE.split(inner)]


def _pick_rows(rows: list[str], query: str, budget: int) -> tuple[list[str], bool]:
    """The rows sharing most words (CJK pairs, ASCII words) with the query, counting only words
    that not every row has, in table order, within TABLE_ROWS and `budget` characters; the first
    rows when none matches. Also: whether any row was left out."""
    wanted = {token for token in query_tokens(query) if len(token) > 1}
    found = [wanted & set(tokenize(row)) for row in rows]
    common = set.intersection(*found) if found else set()
    scores = [len(words - common) for words in found]
    best = max(scores, default=0)
    order = [i for i in range(len(rows)) if scores[i] == best] if best else range(len(rows))
    chosen: list[int] = []
    for index in order:
        if len(chosen) == TABLE_ROWS:
            break
        if len(rows[index]) + 1 <= budget:
            chosen.append(index)
            budget -= len(rows[index]) + 1
    return [rows[i] for i in chosen], len(chosen) < len(rows)


def snippet(text: str, query: str = "") -> str:
    """The passage as sources show it: prose on one line, clipped; a table (with any short lead,
    such as the chunk's "【heading】") as its header, separator and the rows `query` is about."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = _find_table(lines)
    if start is None:
        return _clip(text)
    end = start + 2
    while end < len(lines) and is_table_line(lines[end]):
        end += 1
    header = lines[start:start + 2]
    lead = [_clip(" ".join(lines[:start]))] if start else []
    budget = TABLE_CHARS - sum(len(line) + 1 for line in header)
    rows, left_out = _pick_rows(lines[start + 2:end], query, budget)
    if left_out or end < len(lines):
        rows.append("| " + " | ".join([ELLIPSIS] * len(cells(header[0]))) + " |")
    return "\n".join([*lead, *header, *rows])


def table_of(snippet_text: str) -> tuple[list[str], list[list[str]]] | None:
    """(lead lines, table rows as cell lists, header first) of a snippet holding a table."""
    lines = snippet_text.split("\n")
    start = _find_table(lines)
    if start is None:
        return None
    rows = [cells(line) for line in lines[start:] if is_table_line(line) and not is_separator(line)]
    return lines[:start], rows


def aligned(snippet_text: str) -> list[str]:
    """The snippet for a terminal: a table's columns padded to the same display width (a CJK
    character takes two cells), a rule under the header; prose as it is."""
    table = table_of(snippet_text)
    if table is None:
        return [snippet_text]
    lead, rows = table
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    widths = [max(cell_len(row[col]) for row in rows) for col in range(width)]

    def line(row: list[str]) -> str:
        return " | ".join(cell + " " * (w - cell_len(cell)) for cell, w in zip(row, widths)).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return [*lead, line(rows[0]), rule, *(line(row) for row in rows[1:])]


def _units(text: str) -> list[str]:
    """Characters, except that an ASCII word or number is one unit: a mark never cuts "3000Pa"."""
    return _UNIT.findall(text)


def answer_span(answer: str, fragments: list[str]) -> tuple[int, int, int] | None:
    """(fragment index, start, end) of the longest run of the answer's text found in one fragment,
    in whole ASCII words, when it has at least HIGHLIGHT_MIN_CHARS characters that are not spaces
    or punctuation."""
    wanted = _units(answer)
    best: tuple[int, int, int] | None = None
    for number, fragment in enumerate(fragments):
        units = _units(fragment)
        match = SequenceMatcher(None, units, wanted, autojunk=False).find_longest_match(
            0, len(units), 0, len(wanted))
        start = sum(len(unit) for unit in units[:match.a])
        end = start + sum(len(unit) for unit in units[match.a:match.a + match.size])
        if end > start and (best is None or end - start > best[2] - best[1]):
            best = (number, start, end)
    if best is None:
        return None
    number, start, end = best
    span = fragments[number][start:end]
    if sum(1 for char in span if char.isalnum()) < HIGHLIGHT_MIN_CHARS:
        return None
    return best


def escape_markdown(text: str) -> str:
    """Document text as literal Markdown: HTML's &, <, > as entities and every other ASCII
    punctuation character backslash-escaped, so no emphasis, link, image, HTML tag, math or
    Streamlit directive in a document is acted on."""
    return "".join(_ENTITIES.get(char) or ("\\" + char if char in _ASCII_PUNCTUATION else char)
                   for char in text)


def _marked(fragment: str, span: tuple[int, int] | None) -> str:
    if span is None:
        return escape_markdown(fragment)
    start, end = span
    return (escape_markdown(fragment[:start]) + "<mark>" + escape_markdown(fragment[start:end])
            + "</mark>" + escape_markdown(fragment[end:]))


def highlighted_markdown(snippet_text: str, answer: str = "") -> str:
    """The snippet as safe Markdown for the web app (a table stays a table), the answer's longest
    run in the passage (in a table: in a row, not the header) wrapped in <mark>; the only HTML in
    it is that tag."""
    table = table_of(snippet_text)
    if table is None:
        fragments, lead, rows = [snippet_text], [], []
    else:
        lead, rows = table
        fragments = [*lead, *(cell for row in rows for cell in row)]
    # the header names the columns: the answer's value is looked for in the rows
    header = range(len(lead), len(lead) + len(rows[0])) if rows else range(0)
    searched = ["" if number in header else fragment for number, fragment in enumerate(fragments)]
    found = answer_span(answer, searched) if answer.strip() else None
    pieces = [_marked(fragment, found[1:] if found and found[0] == number else None)
              for number, fragment in enumerate(fragments)]
    if table is None:
        return pieces[0]
    out = pieces[:len(lead)]
    position = len(lead)
    for index, row in enumerate(rows):
        out.append("| " + " | ".join(pieces[position:position + len(row)]) + " |")
        position += len(row)
        if index == 0:
            out.append("| " + " | ".join(["---"] * len(row)) + " |")
    if lead:  # a blank line: the lead is a paragraph of its own, not the table's first row
        out.insert(len(lead), "")
    return "\n".join(out)
