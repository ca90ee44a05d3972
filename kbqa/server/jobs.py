"""Ingestion jobs: uploads are parsed and embedded in the background, one job at a time.

Parsing and embedding take seconds to minutes, longer than an HTTP request should be held, so an
upload answers 202 with a job id and the client polls its status. One worker thread runs the jobs in
order: the store allows one writer per knowledge base anyway, and the CPU is shared with generation.
Only the most recent jobs are kept in memory; a restart forgets them (the documents stay ingested).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from kbqa.errors import KbqaError

KEEP_JOBS = 200


@dataclass
class Job:
    """One upload batch for one knowledge base."""

    id: str
    kb: str
    files: list[str]
    status: Literal["queued", "running", "done", "failed"] = "queued"
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "kb": self.kb, "status": self.status, "files": self.files,
                "outcomes": self.outcomes, "error": self.error}


class Jobs:
    """Runs `ingest(kb, uploads)` per job on one worker; looks jobs up by (kb, id)."""

    def __init__(self, ingest: Any) -> None:
        self._ingest = ingest
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbqa-ingest")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, kb: str, uploads: list[tuple[str, bytes]]) -> Job:
        job = Job(id=uuid.uuid4().hex, kb=kb, files=[name for name, _ in uploads])
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                self._jobs.popitem(last=False)
        self._pool.submit(self._run, job, uploads)
        return job

    def _run(self, job: Job, uploads: list[tuple[str, bytes]]) -> None:
        job.status = "running"
        try:
            outcomes = self._ingest(job.kb, uploads)
        except KbqaError as exc:
            job.error, job.status = str(exc), "failed"
            return
        job.outcomes = [{"name": o.stored_name or o.name, "status": o.status, "chunks": o.chunks,
                         "error": o.error} for o in outcomes]
        job.status = "failed" if any(o.status == "failed" for o in outcomes) else "done"

    def get(self, kb: str, job_id: str) -> Job | None:
        """The job, only when it belongs to `kb`: ids never reveal another knowledge base's work."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.kb == kb else None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
