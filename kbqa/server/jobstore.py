"""Ingestion jobs on disk, so their status outlives the server process that ran them.

One SQLite file in HOME/serve holds every job: each status change is one atomic transaction,
several `kbqa serve` processes over one HOME may share it (any of them answers a status poll), and
nothing is pickled. A job belongs to the process that accepted it. Each process holds an exclusive
flock on its own owner file for its whole life (the file is locked before it appears, so it is never
seen unlocked); the OS drops the lock when the process dies, even when it is killed. A queued or
running job whose owner's lock is free was cut off by a stop or a crash and is reported
'interrupted'. No heartbeat is needed, and a reused pid cannot pass for the dead owner.
Only the newest `keep` jobs are kept (a queued or running one is never dropped).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kbqa.errors import KbqaError

KEEP_JOBS = 1000
UNFINISHED = "status IN ('queued', 'running')"  # an SQL condition
INTERRUPTED = ("the server stopped before this ingestion job finished; send the upload again "
               "(files that were already ingested are skipped, the others are ingested)")
Status = Literal["queued", "running", "done", "failed", "interrupted"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kb TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    files TEXT NOT NULL,
    outcomes TEXT NOT NULL,
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    progress TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_kb ON jobs (kb, seq);
"""
_COLUMNS = "id, kb, status, files, outcomes, error, created_at, updated_at, progress"


@dataclass
class Job:
    """One upload batch for one knowledge base, as stored."""

    id: str
    kb: str
    files: list[str]
    status: Status = "queued"
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    created_at: int = 0
    updated_at: int = 0
    # while running: the file being ingested and, for PDFs and images, its pages done
    progress: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "kb": self.kb, "status": self.status, "files": self.files,
                "outcomes": self.outcomes, "error": self.error, "created_at": self.created_at,
                "updated_at": self.updated_at, "progress": self.progress}


def _job(row: tuple) -> Job:
    job_id, kb, status, files, outcomes, error, created, updated, progress = row
    return Job(id=job_id, kb=kb, status=status, files=json.loads(files),
               outcomes=json.loads(outcomes), error=error, created_at=created, updated_at=updated,
               progress=json.loads(progress) if progress else None)


class JobStore:
    """The jobs in `folder`/jobs.sqlite3, owned by this process while it holds its owner lock."""

    def __init__(self, folder: Path, keep: int = KEEP_JOBS) -> None:
        self.path = folder / "jobs.sqlite3"
        self.owners = folder / "owners"
        self.keep = keep
        self.owner = uuid.uuid4().hex
        try:
            self.owners.mkdir(parents=True, exist_ok=True)
            self._lock = self._hold_owner_lock()
            with self._db() as db:
                db.executescript(_SCHEMA)
            self._add_progress_column()
        except (OSError, sqlite3.Error) as exc:
            raise KbqaError(f"cannot keep ingestion jobs in {folder}: {exc}") from exc
        self._reap()
        self._forget_dead_owners()

    def _hold_owner_lock(self) -> Any:
        """Lock a fresh file, then rename it into place: other processes never see it unlocked."""
        handle = tempfile.NamedTemporaryFile(dir=self.owners, suffix=".tmp", delete=False)
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(handle.name, self.owners / f"{self.owner}.lock")
        return handle

    def _add_progress_column(self) -> None:
        """A store made before jobs reported progress gets the column (once, by any process)."""
        with self._db() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        if "progress" in columns:
            return
        try:
            with self._db() as db:
                db.execute("ALTER TABLE jobs ADD COLUMN progress TEXT")
        except sqlite3.OperationalError as exc:  # another server added it first
            if "duplicate column" not in str(exc):
                raise

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection for one transaction (committed at the end, rolled back on error)."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def alive(self, owner: str) -> bool:
        """Whether the process that owns `owner`'s jobs still holds its lock."""
        try:
            with open(self.owners / f"{owner}.lock", "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except FileNotFoundError:
            return False
        return False  # we got the lock (closing the file released it): its owner is gone

    def _reap(self) -> None:
        """Mark the unfinished jobs of owners that are gone as interrupted."""
        with self._db() as db:
            owners = [owner for (owner,) in db.execute(
                f"SELECT DISTINCT owner FROM jobs WHERE {UNFINISHED} AND owner != ?",
                (self.owner,))]
            for owner in owners:
                if not self.alive(owner):
                    self._interrupt(db, owner)

    @staticmethod
    def _interrupt(db: sqlite3.Connection, owner: str) -> None:
        db.execute(f"UPDATE jobs SET status = 'interrupted', error = ?, updated_at = ? "
                   f"WHERE owner = ? AND {UNFINISHED}", (INTERRUPTED, int(time.time()), owner))

    def _forget_dead_owners(self) -> None:
        """Remove the owner files that no live process holds (their jobs were just reaped)."""
        for path in self.owners.glob("*.lock"):
            if path.stem != self.owner and not self.alive(path.stem):
                path.unlink(missing_ok=True)

    def add(self, kb: str, files: list[str]) -> Job:
        """A new queued job; drops the oldest finished jobs beyond `keep`."""
        now = int(time.time())
        job = Job(id=uuid.uuid4().hex, kb=kb, files=files, created_at=now, updated_at=now)
        with self._db() as db:
            db.execute("INSERT INTO jobs (id, kb, owner, status, files, outcomes, created_at, "
                       "updated_at) VALUES (?, ?, ?, 'queued', ?, '[]', ?, ?)",
                       (job.id, kb, self.owner, json.dumps(files, ensure_ascii=False), now, now))
            db.execute(f"DELETE FROM jobs WHERE NOT {UNFINISHED} AND seq <= "
                       "(SELECT MAX(seq) FROM jobs) - ?", (self.keep,))
        return job

    def update(self, job_id: str, status: Status, outcomes: list[dict[str, Any]] | None = None,
               error: str | None = None) -> None:
        """A new status (progress is cleared: a status change starts or ends the work)."""
        with self._db() as db:
            db.execute("UPDATE jobs SET status = ?, outcomes = ?, error = ?, updated_at = ?, "
                       "progress = NULL WHERE id = ?",
                       (status, json.dumps(outcomes or [], ensure_ascii=False), error,
                        int(time.time()), job_id))

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """Where a running job is, for status polls (left alone once the job has ended)."""
        with self._db() as db:
            db.execute("UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND status = "
                       "'running'", (json.dumps(progress, ensure_ascii=False), int(time.time()),
                                     job_id))

    def get(self, kb: str, job_id: str) -> Job | None:
        """The job, only when it belongs to `kb`: ids never reveal another knowledge base's work."""
        self._reap()
        with self._db() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND kb = ?",
                             (job_id, kb)).fetchone()
        return _job(row) if row else None

    def recent(self, kb: str, limit: int) -> list[Job]:
        """The newest `limit` jobs of `kb`, newest first."""
        self._reap()
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE kb = ? ORDER BY seq DESC "
                              "LIMIT ?", (kb, limit)).fetchall()
        return [_job(row) for row in rows]

    def close(self) -> None:
        """On a clean stop: this process's unfinished jobs are interrupted; give up the lock."""
        with self._db() as db:
            self._interrupt(db, self.owner)
        (self.owners / f"{self.owner}.lock").unlink(missing_ok=True)
        self._lock.close()
