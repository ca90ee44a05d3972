"""Print the README's fenced command under a bold or heading label ("Run it", "Test it").

CI runs what users read: the command is taken from README.md at run time, never kept as a
second copy, so an edit that breaks the README's command breaks CI.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def command_under(readme: str, label: str) -> str:
    """The first ```bash block after the line that names `label`; an error if there is none."""
    lines = readme.splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"^\s*(#+\s*|\*\*){re.escape(label)}\b", line):
            break
    else:
        raise SystemExit(f"README.md has no line starting with '{label}'")
    block: list[str] | None = None
    for line in lines[index + 1:]:
        if block is None and line.strip() in ("```bash", "```sh", "```shell"):
            block = []
        elif block is not None and line.strip() == "```":
            break
        elif block is not None:
            block.append(line)
        elif line.startswith("#"):
            raise SystemExit(f"no fenced command under '{label}' before the next heading")
    if not block or not any(part.strip() for part in block):
        raise SystemExit(f"the fenced block under '{label}' is empty or unterminated")
    return "\n".join(block)


if __name__ == "__main__":
    readme = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md").read_text(encoding="utf-8")
    print(command_under(readme, sys.argv[1]))
