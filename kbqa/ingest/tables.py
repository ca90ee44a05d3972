"""Tables as Markdown: the first row is the header, one line per row, so a chunk of rows still
says what each cell is (the splitter repeats the header in every chunk of a long table)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_SEPARATOR_CELL = re.compile(r"^\s*:?-{3,}:?\s*$")


def _cell(text: object) -> str:
    """One line of cell text; a "|" inside a cell is escaped so it does not end the cell."""
    return " ".join(str(text or "").split()).replace("|", "\\|")


def markdown_table(rows: Iterable[Sequence[object]]) -> str:
    """Rows (the first one the header) as a Markdown table; empty rows dropped, short rows padded.

    Returns "" for a table without any text.
    """
    cleaned = [[_cell(cell) for cell in row] for row in rows]
    cleaned = [row for row in cleaned if any(row)]
    if not cleaned:
        return ""
    width = max(len(row) for row in cleaned)
    lines = [_line([*row, *[""] * (width - len(row))]) for row in cleaned]
    return "\n".join([lines[0], _line(["---"] * width), *lines[1:]])


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def html_table(html: str) -> str:
    """An HTML table (unstructured's ``text_as_html``) as a Markdown table."""
    from unstructured.common.html_table import HtmlTable

    return markdown_table(list(row.iter_cell_texts()) for row in HtmlTable.from_html_text(html).iter_rows())


def is_table_line(line: str) -> bool:
    """A Markdown table row as markdown_table writes it."""
    stripped = line.strip()
    return len(stripped) >= 2 and stripped.startswith("|") and stripped.endswith("|")


def is_separator(line: str) -> bool:
    """The "| --- | --- |" line under a Markdown table's header."""
    cells = line.strip().strip("|").split("|")
    return is_table_line(line) and all(_SEPARATOR_CELL.match(cell) for cell in cells)
