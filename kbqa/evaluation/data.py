"""Evaluation inputs: questions JSONL and variant specs (document sets: kbqa.ingest.jsonl_docs)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kbqa.errors import KbqaError


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    answers: tuple[str, ...]
    doc_id: str | None = None


@dataclass(frozen=True)
class Variant:
    """A model variant: the base model alone ('plain') or with one or more adapters stacked."""

    name: str
    adapters: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def is_plain(self) -> bool:
        return not self.adapters and self.name != DEFAULT_VARIANT


DEFAULT_VARIANT = "default"


def parse_variant(spec: str) -> Variant:
    """'plain', 'default' (see `with_default_reader`) or 'NAME=ADAPTER_DIR[+ADAPTER_DIR...]'."""
    if spec == "plain":
        return Variant("plain")
    if spec == DEFAULT_VARIANT:
        return Variant(DEFAULT_VARIANT)
    name, sep, dirs = spec.partition("=")
    if not sep or not name or not dirs or name in {"plain", "comparisons", "input_problems"}:
        raise KbqaError(f"bad --variant {spec!r}: use 'plain' or NAME=ADAPTER_DIR[+ADAPTER_DIR]")
    adapters = tuple(Path(part).expanduser() for part in dirs.split("+") if part)
    missing = [str(a) for a in adapters if not a.is_dir()]
    if missing:
        raise KbqaError(f"--variant {name}: adapter folder(s) not found: {', '.join(missing)}")
    return Variant(name, adapters)


def with_default_reader(llm: str, variants: tuple[Variant, ...]) -> tuple[str, tuple[Variant, ...]]:
    """Resolve a 'default' variant to kbqa's default reader as an adapter on its base, so that
    `plain` (the base) and `default` are compared on one model: returns the model to evaluate
    on and the variants. Other variant lists pass through unchanged."""
    if not any(v.name == DEFAULT_VARIANT and not v.adapters for v in variants):
        return llm, variants
    from kbqa.llm.loading import EMBEDDED_PREFIX, EMBEDDED_READERS, base_model_name

    named = base_model_name(llm) or llm
    reader = next((r for r in EMBEDDED_READERS.values()
                   if named in (EMBEDDED_PREFIX + r.name, EMBEDDED_PREFIX + r.base)), None)
    if reader is None:
        raise KbqaError(f"--variant default is kbqa's default reader on its base model; --llm "
                        f"{llm} is neither (use --llm embedded or name an adapter: NAME=DIR)")
    resolved = tuple(Variant(DEFAULT_VARIANT, (reader.adapter_folder(),))
                     if v.name == DEFAULT_VARIANT and not v.adapters else v for v in variants)
    return EMBEDDED_PREFIX + reader.base, resolved


def read_questions(path: Path) -> tuple[list[Question], list[str]]:
    """Valid questions and one message per malformed line (with its line number)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KbqaError(f"cannot read questions file {path}: {exc}") from exc
    questions: list[Question] = []
    problems: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answers = row["answers"]
            if not isinstance(row["question"], str) or not row["question"].strip():
                raise ValueError("empty 'question'")
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise ValueError("'answers' must be a list of strings")
            qid = str(row.get("qid") or f"line{number}")
            if qid in seen:
                raise ValueError(f"duplicate qid {qid!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{path.name}:{number}: skipped: {exc}")
            continue
        seen.add(qid)
        questions.append(Question(qid, row["question"].strip(), tuple(answers),
                                  str(row["doc_id"]) if row.get("doc_id") else None))
    if not questions:
        raise KbqaError(f"{path} holds no valid questions" + (f" ({problems[0]})" if problems else ""))
    return questions, problems
