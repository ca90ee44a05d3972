"""The CLI writer of the reliability suite (tests/test_reliability.py), run as its own process.

    python -m tests.reliability_writer HOME DOCS EVENTS SECONDS

Drives the real `kbqa` CLI (`kbqa.cli.main`, in this one process so the embedder loads once) in
a loop over knowledge base 'rel' in HOME: ingest a new document, ingest another, remove the first,
and every second round delete the whole base (the next ingest re-creates it). Each document has a
name used once. After each command returns successfully it appends a JSON line to EVENTS:
{"event": "added" | "removed", "names": [...], "t": time.monotonic()}; CLOCK_MONOTONIC is one
clock for every process on the machine, so the test can order these against its requests.
A command refused because the server is writing the same base (exit 1) is simply tried again.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

from kbqa.cli import main
from kbqa.embeddings.embedders import EncoderEmbeddings

KB = "rel"


def doc_text(name: str) -> str:
    """Every document answers the suite's question, with its own name inside."""
    return f"# 停车规定 {name}\n\n停车位每月收费八十元，登记编号 {name}，由物业管理处负责。\n"


def run(*args: str) -> bool:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([*args, "--kb", KB]) == 0


def listed(home: Path) -> list[str]:
    from kbqa.config import Settings
    from kbqa.kb import folders
    from kbqa.kb.store import KnowledgeBase

    root = Settings(home=home).kb_root
    if KB not in folders.list_names(root):
        return []
    with KnowledgeBase.open(root, KB, _embeddings()) as kb:
        return [Path(r.source).stem for r in kb.documents()]


def _embeddings() -> EncoderEmbeddings:
    """The embedded default (loaded once per process)."""
    from kbqa.embeddings.embedders import load_embedded_default

    return load_embedded_default()


def record(events: Path, event: str, names: list[str]) -> None:
    with events.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"event": event, "names": names, "t": time.monotonic()}) + "\n")


def retry(*args: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if run(*args):
            return True
        time.sleep(0.2)
    return False


def writer(home: Path, docs: Path, events: Path, seconds: float) -> None:
    os.environ["KBQA_HOME"] = str(home)
    deadline = time.monotonic() + seconds
    round_ = 0
    while time.monotonic() < deadline:
        first, second = f"cli{round_}a", f"cli{round_}b"
        paths = []
        for name in (first, second):
            path = docs / f"{name}.md"
            path.write_text(doc_text(name), encoding="utf-8")
            paths.append(path)
            if retry("ingest", str(path), deadline=deadline + 30):
                record(events, "added", [name])
        if retry("kb", "remove", str(paths[0].resolve()), "--yes", deadline=deadline + 30):
            record(events, "removed", [first])
        if round_ % 2 == 1:
            present = listed(home)  # every document in it goes with the base
            if retry("kb", "remove", "--yes", deadline=deadline + 30):
                record(events, "removed", present)
        round_ += 1
    final = docs / "clifinal.md"  # the base ends non-empty, so the test can compare its indexes
    final.write_text(doc_text("clifinal"), encoding="utf-8")
    if retry("ingest", str(final), deadline=time.monotonic() + 60):
        record(events, "added", ["clifinal"])
    record(events, "done", [])


if __name__ == "__main__":
    writer(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
