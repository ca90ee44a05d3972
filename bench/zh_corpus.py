"""A generated Chinese corpus for the speed benchmarks: real sentences, recombined.

Sentences come from the CMRC 2018 passages (dev + train, ~700 Wikipedia-style articles), so token
statistics (bigram frequencies, sentence lengths, digits and Latin words mixed in) are those of real
Chinese text; chunks are random runs of them with a serial number, so every chunk is distinct
(an embedding cache hit can only come from a real re-ingest).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

CMRC = Path("/work/shared/eval/cmrc2018")
_SENTENCE_RE = re.compile(r"[^。！？!?\n]+[。！？!?]?")


def sentences() -> list[str]:
    """Distinct sentences of at least 8 characters from the CMRC passages."""
    found: dict[str, None] = {}
    for part in ("dev", "train"):
        with (CMRC / part / "docs.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    for sentence in _SENTENCE_RE.findall(json.loads(line)["text"]):
                        if len(sentence.strip()) >= 8:
                            found[sentence.strip()] = None
    return list(found)


def chunk_texts(count: int, target_chars: int = 250, seed: int = 0) -> list[str]:
    """`count` distinct chunk-sized texts (~`target_chars` characters each)."""
    rng = random.Random(seed)
    pool = sentences()
    texts = []
    for number in range(count):
        parts = [f"第{number}条。"]
        while sum(map(len, parts)) < target_chars:
            parts.append(rng.choice(pool))
        texts.append("".join(parts))
    return texts


def write_documents(folder: Path, texts: list[str], per_file: int = 20) -> list[Path]:
    """Write the texts as .txt files of `per_file` paragraphs each (one blank line between)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(texts), per_file):
        path = folder / f"doc{start // per_file:06d}.txt"
        path.write_text("\n\n".join(texts[start:start + per_file]) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
