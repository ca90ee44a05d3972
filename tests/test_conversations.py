"""ConversationStore: conversations, turns and feedback in SQLite, each write all or nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from kbqa.conversations import ConversationError, ConversationStore
from kbqa.qa.answers import Source

SOURCE = Source(filename="员工手册.md", source="/srv/kb/员工手册.md", score=0.81,
                snippet="入职满一年的员工每年享有十天带薪年假。", heading="年假制度", chunk_id=3)


def _answered(store: ConversationStore, conversation_id: int, question: str, answer: str):
    turn = store.add_turn(conversation_id, question, "plain")
    turn.answer, turn.sources, turn.state = answer, [SOURCE], "done"
    turn.timings = {"load": 1.5, "first_token": 2.0, "total": 3.0}
    store.save_turn(turn)
    return turn


def test_turns_round_trip_and_survive_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = ConversationStore(path)
    conversation = store.create("公司制度")
    assert conversation.title == "新对话"
    turn = _answered(store, conversation.id, "年假几天？", "十天")
    partial = store.add_turn(conversation.id, "报销期限？", "plain")
    partial.answer, partial.state = "三十", "stopped"
    store.save_turn(partial)

    again = ConversationStore(path)  # as after a restart
    [listed] = again.list("公司制度")
    assert listed.title == "年假几天？"  # the first question names it
    assert again.list("其他") == []
    first, second = again.turns(conversation.id)
    assert (first.id, first.question, first.answer, first.state) == (turn.id, "年假几天？", "十天",
                                                                     "done")
    assert first.sources == [SOURCE] and first.timings["load"] == 1.5
    assert (second.answer, second.state) == ("三十", "stopped")


def test_rename_delete_clear(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "c.sqlite3")
    one, two = store.create("kb"), store.create("kb")
    _answered(store, one.id, "q1", "a1")
    store.rename(one.id, "  年假   问题 ")
    assert store.get(one.id).title == "年假 问题"
    assert [c.id for c in store.list("kb")] == [one.id, two.id]  # the one used last first
    with pytest.raises(ConversationError, match="empty"):
        store.rename(one.id, " ")
    with pytest.raises(ConversationError, match="does not exist"):
        store.rename(999, "x")
    store.clear(one.id)
    assert store.turns(one.id) == [] and store.get(one.id).title == "年假 问题"
    store.delete(two.id)
    assert [c.id for c in store.list()] == [one.id]
    with pytest.raises(ConversationError, match="does not exist"):
        store.add_turn(two.id, "q", "plain")


def test_feedback_keeps_its_copy_and_exports(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "c.sqlite3")
    conversation = store.create("公司制度")
    turn = _answered(store, conversation.id, "年假几天？", "十天")
    store.rate(turn.id, -1)
    store.rate(turn.id, 1)  # a second rating replaces the first
    assert store.turns(conversation.id)[0].rating == 1
    with pytest.raises(ConversationError, match="1 or -1"):
        store.rate(turn.id, 5)
    with pytest.raises(ConversationError, match="does not exist"):
        store.rate(12345, 1)
    store.delete(conversation.id)
    [line] = store.export_feedback().splitlines()
    record = json.loads(line)
    assert record["rating"] == 1 and record["kb"] == "公司制度"
    assert (record["question"], record["answer"], record["variant"]) == ("年假几天？", "十天",
                                                                         "plain")
    assert record["sources"][0]["snippet"] == SOURCE.snippet


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = ConversationStore(path)
    conversation = store.create("kb")
    turn = _answered(store, conversation.id, "q", "a")
    turn.answer, turn.state = "changed", "no-such-state"
    with pytest.raises(ConversationError, match="state"):
        store.save_turn(turn)
    # a database error in the middle of add_turn (the conversation update fails after the turn
    # was inserted) rolls the insert back
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON conversations "
                   "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.DatabaseError, match="refused"):
        store.add_turn(conversation.id, "q2", "plain")
    assert [t.question for t in store.turns(conversation.id)] == ["q"]
    assert store.turns(conversation.id)[0].answer == "a"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    ConversationStore(path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ConversationError, match="newer kbqa"):
        ConversationStore(path)


# the turns table as schema 1 (kbqa before answers kept their answerability) wrote it
SCHEMA_1_TURNS = """
CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, kb TEXT NOT NULL,
    title TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    question TEXT NOT NULL, answer TEXT NOT NULL DEFAULT '', sources TEXT NOT NULL DEFAULT '[]',
    refused INTEGER NOT NULL DEFAULT 0, timings TEXT NOT NULL DEFAULT '{}',
    variant TEXT NOT NULL DEFAULT '', error TEXT, state TEXT NOT NULL DEFAULT 'pending',
    created REAL NOT NULL);
INSERT INTO conversations VALUES (1, '公司制度', '年假几天？', 1.0, 1.0);
INSERT INTO turns (conversation_id, question, answer, state, created)
    VALUES (1, '年假几天？', '十天', 'done', 1.0);
PRAGMA user_version = 1;
"""


def test_a_schema_1_file_opens_and_keeps_its_turns(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_1_TURNS)
    store = ConversationStore(path)
    [old] = store.turns(1)
    assert (old.question, old.answer, old.answerability) == ("年假几天？", "十天", None)
    new = _answered(store, 1, "报销期限？", "三十天")
    new.answerability = 0.42
    store.save_turn(new)
    assert [t.answerability for t in ConversationStore(path).turns(1)] == [None, 0.42]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
