"""Ingestion jobs: uploads are parsed and embedded in the background, one job at a time.

Parsing and embedding take seconds to minutes, longer than an HTTP request should be held, so an
upload answers 202 with a job id and the client polls its status. One worker thread runs the jobs in
order: the store allows one writer per knowledge base anyway, and the CPU is shared with generation.
Every status change is written to the `JobStore`, so a status survives a restart of the server (a
job cut off by the restart reads 'interrupted'). A running job reports the file it is on and, for
PDFs and images (OCR takes seconds a page), the pages done: this process's polls see every step,
the store gets them at most every `PROGRESS_WRITE_S` (for other servers over the same HOME).

Uploaded files wait on disk, never in memory: each job's files sit in its own folder under
`incoming/<owner>/` (the owner being this process's JobStore id) and the folder goes when the job
ends. Folders of owners that are gone (a crash, a kill) are removed when a server starts.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbqa.errors import KbqaError
from kbqa.server.jobstore import Job, JobStore

if TYPE_CHECKING:
    from kbqa.kb.uploads import UploadOutcome

log = logging.getLogger(__name__)


Upload = tuple[str, Path]  # (name as uploaded, where its bytes wait on disk)
PROGRESS_WRITE_S = 1.0


class JobProgress:
    """Where one running job is: `file` and `page` are the ingest's callbacks."""

    def __init__(self, jobs: Jobs, job_id: str) -> None:
        self._jobs = jobs
        self._job_id = job_id
        self._now: dict[str, Any] = {}
        self._written = 0.0

    def file(self, done: int, total: int, name: str) -> None:
        """Called before each file (`done` files before it, of `total`), and with no name at the end."""
        if name:
            self._set({"file": name, "files_done": done, "files": total, "page": None,
                       "pages": None}, write=True)

    def page(self, done: int, total: int) -> None:
        """Called after each page of the current file (a PDF or an image)."""
        if self._now:
            self._set({**self._now, "page": done, "pages": total}, write=False)

    def _set(self, progress: dict[str, Any], write: bool) -> None:
        self._now = progress
        self._jobs._live[self._job_id] = progress
        if write or time.monotonic() - self._written >= PROGRESS_WRITE_S:
            self._written = time.monotonic()
            self._jobs.store.set_progress(self._job_id, progress)


class Jobs:
    """Runs `ingest(kb, uploads, progress)` per job on one worker; the store keeps and answers the
    status, with this process's running job's latest progress on top."""

    def __init__(self, ingest: Callable[[str, list[Upload], JobProgress], list[UploadOutcome]],
                 store: JobStore) -> None:
        self._ingest = ingest
        self.store = store
        self._live: dict[str, dict[str, Any]] = {}  # job id -> progress, while it runs here
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbqa-ingest")
        incoming = store.path.parent / "incoming"
        for folder in incoming.glob("*") if incoming.is_dir() else []:
            if folder.name != store.owner and not store.alive(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        self.incoming = incoming / store.owner

    def staging(self) -> Path:
        """A new folder for one upload's files (pass it to `submit`, or remove it)."""
        folder = self.incoming / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def submit(self, kb: str, uploads: list[Upload], folder: Path) -> Job:
        """Queue the uploads (their files in `folder`, removed when the job ends)."""
        job = self.store.add(kb, [name for name, _ in uploads])
        self._pool.submit(self._run, job, uploads, folder)
        return job

    def run_in_worker(self, task: Callable[[], object]) -> None:
        """Run `task` on the ingest worker, between jobs (for housekeeping that writes)."""
        def guarded() -> None:
            try:
                task()
            except Exception:  # housekeeping must never stop the worker
                log.exception("ingest worker task failed")
        self._pool.submit(guarded)

    def _run(self, job: Job, uploads: list[Upload], folder: Path) -> None:
        try:
            self._run_job(job, uploads)
        finally:
            self._live.pop(job.id, None)
            shutil.rmtree(folder, ignore_errors=True)

    def _run_job(self, job: Job, uploads: list[Upload]) -> None:
        self.store.update(job.id, "running")
        try:
            outcomes = self._ingest(job.kb, uploads, JobProgress(self, job.id))
        except KbqaError as exc:
            self.store.update(job.id, "failed", error=str(exc))
            return
        except Exception as exc:  # a bug, not the upload: keep the details in the server log
            log.exception("ingestion job %s failed", job.id)
            self.store.update(job.id, "failed", error=f"ingestion failed unexpectedly "
                                                      f"({type(exc).__name__}); see the server log")
            return
        views = [{"name": o.stored_name or o.name, "status": o.status, "chunks": o.chunks,
                  "error": o.error} for o in outcomes]
        failed = any(o.status == "failed" for o in outcomes)
        self.store.update(job.id, "failed" if failed else "done", outcomes=views)

    def get(self, kb: str, job_id: str) -> Job | None:
        job = self.store.get(kb, job_id)
        return self._with_live(job) if job else None

    def recent(self, kb: str, limit: int) -> list[Job]:
        return [self._with_live(job) for job in self.store.recent(kb, limit)]

    def _with_live(self, job: Job) -> Job:
        """The job, with this process's newest progress when it is running here."""
        live = self._live.get(job.id)
        if live is not None and job.status == "running":
            job.progress = dict(live)
        return job

    def shutdown(self) -> None:
        """Finish the running job, drop the queued ones (they read 'interrupted'), release."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.store.close()
