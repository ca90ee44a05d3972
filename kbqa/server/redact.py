"""Server paths never leave the server: error messages are cut down before they are answered."""

from __future__ import annotations

import re

# an absolute path (two or more parts) inside a message: reduced to its last part
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"`]+/)+([^\s/'\"`]*)")


def without_paths(message: str) -> str:
    """`message` with every absolute path cut to its file name: a 500 names no server folder."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "…", message)
