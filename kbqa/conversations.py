"""Chat conversations and answer feedback, kept in one SQLite file under KBQA_HOME.

The web app lists conversations in its sidebar; they survive a reload or a restart. Each write
is one SQLite transaction (all or nothing, also if the process dies), and JSON (never pickle)
holds an answer's sources and timings. Feedback keeps its own copy of the question, answer and
sources, so it survives deleting the conversation and can be exported for evaluation.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kbqa.errors import KbqaError
from kbqa.qa.answers import Source

SCHEMA_VERSION = 2  # 2: turns.answerability
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kb TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    question TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '',
    sources TEXT NOT NULL DEFAULT '[]',
    refused INTEGER NOT NULL DEFAULT 0,
    timings TEXT NOT NULL DEFAULT '{}',
    variant TEXT NOT NULL DEFAULT '',
    error TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    created REAL NOT NULL,
    answerability REAL
);
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns(conversation_id, id);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    turn_id INTEGER UNIQUE REFERENCES turns(id) ON DELETE SET NULL,
    rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
    kb TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    sources TEXT NOT NULL,
    variant TEXT NOT NULL,
    created REAL NOT NULL
);
"""
TURN_STATES = ("pending", "done", "stopped", "error")
MAX_TITLE = 80


class ConversationError(KbqaError):
    """A conversation or turn does not exist, or a value given for one is invalid."""


@dataclass(frozen=True)
class Conversation:
    """One conversation: a title, the knowledge base it asks, when it was last used."""

    id: int
    kb: str
    title: str
    created: float
    updated: float


@dataclass
class Turn:
    """A question and its answer; `state` says whether the answer is whole or was cut short."""

    id: int
    conversation_id: int
    question: str
    answer: str = ""
    sources: list[Source] = field(default_factory=list)
    refused: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    variant: str = ""
    error: str | None = None
    state: str = "pending"
    created: float = 0.0
    rating: int | None = None
    answerability: float | None = None  # the reader's probe (kbqa.llm.answerability), if it has one


def _sources_json(sources: list[Source]) -> str:
    return json.dumps([asdict(s) for s in sources], ensure_ascii=False)


def _sources(raw: str) -> list[Source]:
    return [Source(**item) for item in json.loads(raw)]


class ConversationStore:
    """Conversations, their turns and feedback in `path` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConversationError(f"{self.path} was written by a newer kbqa "
                                        f"(schema {version} > {SCHEMA_VERSION})")
            db.executescript(_SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(turns)")}
            if "answerability" not in columns:  # a file of schema 1: its turns have none
                db.execute("ALTER TABLE turns ADD COLUMN answerability REAL")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection per call (Streamlit serves sessions on several threads); the `with`
        block is one transaction: committed when it ends, rolled back on an exception."""
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise ConversationError(f"cannot open {self.path}: {exc}") from exc
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA journal_mode = WAL")
            with db:
                yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ conversations

    def create(self, kb: str, title: str = "") -> Conversation:
        """A new, empty conversation on knowledge base `kb`."""
        now = time.time()
        title = _clean_title(title) if title.strip() else "新对话"
        with self._connect() as db:
            cursor = db.execute("INSERT INTO conversations (kb, title, created, updated) "
                                "VALUES (?, ?, ?, ?)", (kb, title, now, now))
        return Conversation(int(cursor.lastrowid or 0), kb, title, now, now)

    def list(self, kb: str | None = None) -> list[Conversation]:
        """Conversations, the most recently used first (only those on `kb` when given)."""
        query = "SELECT * FROM conversations"
        args: tuple[Any, ...] = ()
        if kb is not None:
            query, args = query + " WHERE kb = ?", (kb,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY updated DESC, id DESC", args).fetchall()
        return [Conversation(r["id"], r["kb"], r["title"], r["created"], r["updated"])
                for r in rows]

    def get(self, conversation_id: int) -> Conversation:
        with self._connect() as db:
            row = db.execute("SELECT * FROM conversations WHERE id = ?",
                             (conversation_id,)).fetchone()
        if row is None:
            raise ConversationError(f"conversation {conversation_id} does not exist")
        return Conversation(row["id"], row["kb"], row["title"], row["created"], row["updated"])

    def rename(self, conversation_id: int, title: str) -> None:
        if not title.strip():
            raise ConversationError("a conversation title cannot be empty")
        with self._connect() as db:
            changed = db.execute("UPDATE conversations SET title = ? WHERE id = ?",
                                 (_clean_title(title), conversation_id)).rowcount
        if not changed:
            raise ConversationError(f"conversation {conversation_id} does not exist")

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its turns (feedback given on them is kept)."""
        with self._connect() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def clear(self, conversation_id: int) -> None:
        """Remove a conversation's turns, keeping the conversation (and feedback given)."""
        with self._connect() as db:
            db.execute("DELETE FROM turns WHERE conversation_id = ?", (conversation_id,))

    # ------------------------------------------------------------------ turns

    def turns(self, conversation_id: int) -> list[Turn]:
        """The conversation's turns in the order they were asked, with any rating given."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT t.*, f.rating FROM turns t LEFT JOIN feedback f ON f.turn_id = t.id "
                "WHERE t.conversation_id = ? ORDER BY t.id", (conversation_id,)).fetchall()
        return [Turn(id=r["id"], conversation_id=r["conversation_id"], question=r["question"],
                     answer=r["answer"], sources=_sources(r["sources"]), refused=bool(r["refused"]),
                     timings=json.loads(r["timings"]), variant=r["variant"], error=r["error"],
                     state=r["state"], created=r["created"], rating=r["rating"],
                     answerability=r["answerability"]) for r in rows]

    def add_turn(self, conversation_id: int, question: str, variant: str = "") -> Turn:
        """Record a question before its answer starts, so an interrupted answer is not lost; a
        conversation still called "新对话" takes the first question as its title."""
        now = time.time()
        with self._connect() as db:
            conversation = db.execute("SELECT title FROM conversations WHERE id = ?",
                                      (conversation_id,)).fetchone()
            if conversation is None:
                raise ConversationError(f"conversation {conversation_id} does not exist")
            cursor = db.execute("INSERT INTO turns (conversation_id, question, variant, created) "
                                "VALUES (?, ?, ?, ?)", (conversation_id, question, variant, now))
            first = db.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = ?",
                               (conversation_id,)).fetchone()[0] == 1
            title = (_clean_title(question) if first and conversation["title"] == "新对话"
                     else conversation["title"])
            db.execute("UPDATE conversations SET updated = ?, title = ? WHERE id = ?",
                       (now, title, conversation_id))
        return Turn(id=int(cursor.lastrowid or 0), conversation_id=conversation_id,
                    question=question, variant=variant, created=now)

    def save_turn(self, turn: Turn) -> None:
        """Write a turn's answer, sources, timings and state (partial answers too)."""
        if turn.state not in TURN_STATES:
            raise ConversationError(f"turn state {turn.state!r} is not one of {TURN_STATES}")
        with self._connect() as db:
            db.execute("UPDATE turns SET answer = ?, sources = ?, refused = ?, timings = ?, "
                       "error = ?, state = ?, answerability = ? WHERE id = ?",
                       (turn.answer, _sources_json(turn.sources), int(turn.refused),
                        json.dumps(turn.timings), turn.error, turn.state, turn.answerability,
                        turn.id))

    # ------------------------------------------------------------------ feedback

    def rate(self, turn_id: int, rating: int) -> None:
        """👍 (1) or 👎 (-1) on an answer, stored with a copy of its question, answer and sources;
        rating again replaces the earlier rating."""
        if rating not in (-1, 1):
            raise ConversationError(f"a rating is 1 or -1, not {rating!r}")
        with self._connect() as db:
            row = db.execute("SELECT t.*, c.kb FROM turns t JOIN conversations c "
                             "ON c.id = t.conversation_id WHERE t.id = ?", (turn_id,)).fetchone()
            if row is None:
                raise ConversationError(f"turn {turn_id} does not exist")
            db.execute("INSERT INTO feedback (turn_id, rating, kb, question, answer, sources, "
                       "variant, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT(turn_id) DO UPDATE SET rating = excluded.rating, "
                       "created = excluded.created",
                       (turn_id, rating, row["kb"], row["question"], row["answer"],
                        row["sources"], row["variant"], time.time()))

    def feedback(self) -> list[dict[str, Any]]:
        """Every rating given, oldest first, as JSON-ready records."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM feedback ORDER BY id").fetchall()
        return [{"rating": r["rating"], "kb": r["kb"], "question": r["question"],
                 "answer": r["answer"], "sources": json.loads(r["sources"]),
                 "variant": r["variant"], "created": r["created"]} for r in rows]

    def export_feedback(self) -> str:
        """The ratings as JSON Lines (one record a line), for evaluators."""
        return "".join(json.dumps(record, ensure_ascii=False) + "\n"
                       for record in self.feedback())


def _clean_title(title: str) -> str:
    title = " ".join(title.split())
    return title[:MAX_TITLE] + ("…" if len(title) > MAX_TITLE else "")
