"""Knowledge-base endpoints: create / list / delete KBs; upload / list / remove documents; jobs.

Documents are named to clients by their bare file name (uploads are stored flat in the KB's
folder; a file ingested with the CLI is named the same way): server paths never leave the server.
Uploads are refused before any is stored when one is unusable: 413 over `max_file_mb` (checked on
Content-Length before the body is read, and per file), 422 for a name or type kbqa cannot take or
two files that would be stored under one name. Accepted files wait on disk (never in memory) for
a background job that ingests them (202 + job id; poll its status). Job status is answered only
under the job's own knowledge base, so a key sees only jobs of KBs it is allowed.

Deleting a base or removing a document while a writer holds that base (an ingestion job of this
server, or another process such as the CLI) answers 409 at once; nothing here holds a lock across
more than one base, so other bases' requests never wait.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from kbqa.errors import KnowledgeBaseBusy, KnowledgeBaseError
from kbqa.kb.freshness import writer_busy
from kbqa.kb.uploads import UploadError, duplicate_names, sanitize_filename
from kbqa.qa.answers import Source
from kbqa.server.auth import ApiKey
from kbqa.server.limits import MULTIPART_SLACK
from kbqa.server.schemas import CreateKb
from kbqa.server.state import ApiError, busy, require_key, state_of

if TYPE_CHECKING:
    from kbqa.kb.reads import DocumentRecord
    from kbqa.kb.store import KnowledgeBase

router = APIRouter(prefix="/v1/kbs")
MAX_FILES = 100
LIST_JOBS = 100  # GET /v1/kbs/{kb}/jobs answers the newest this many


def public_name(source: str) -> str:
    """A document's name as clients see it (see the module doc)."""
    return Path(source).name


def source_view(source: Source) -> dict[str, Any]:
    """A cited passage for the API: no server path (`source` is reduced to a bare name)."""
    return {"document": public_name(source.source) if source.source else source.filename,
            "filename": source.filename, "heading": source.heading, "page": source.page,
            "score": source.score, "snippet": source.snippet}


def _documents(kb: KnowledgeBase) -> list[tuple[str, DocumentRecord]]:
    """(public name, record) of each document: no server path leaves the API."""
    return [(public_name(record.source), record) for record in kb.documents()]


@router.get("")
def list_kbs(request: Request, key: ApiKey = Depends(require_key)) -> dict[str, Any]:
    state = state_of(request)
    data = []
    for name in state.kb_names():
        if key.allows(name):
            try:
                kb = state.open_kb(key, name)
            except ApiError as exc:  # deleted since it was listed
                if exc.status == 404:
                    continue
                raise
            data.append({"name": name, "documents": len(kb.documents()),
                         "chunks": kb.chunk_count})
    return {"object": "list", "data": data}


@router.post("", status_code=201)
def create_kb(request: Request, body: CreateKb, key: ApiKey = Depends(require_key)) -> dict:
    state = state_of(request)
    if not key.allows(body.name):
        raise ApiError(403, f"this API key may not create knowledge base {body.name!r}",
                       "permission_error", "kb_not_allowed")
    exists = ApiError(409, f"knowledge base {body.name!r} already exists",
                      "invalid_request_error", "kb_exists")
    with state.guards.now_or_409(body.name):
        if body.name in state.kb_names():
            raise exists
        try:
            state.service.create_knowledge_base(body.name)
        except KnowledgeBaseError as exc:
            if body.name in state.kb_names():  # made meanwhile by another process
                raise exists from exc
            raise ApiError(422, str(exc), "invalid_request_error", "bad_kb_name") from exc
    return {"name": body.name, "documents": 0, "chunks": 0}


@router.delete("/{kb}")
def delete_kb(request: Request, kb: str, key: ApiKey = Depends(require_key)) -> dict:
    state = state_of(request)
    state.open_kb(key, kb)
    with state.guards.now_or_409(kb):
        try:
            state.service.delete_knowledge_base(kb, lock_timeout=0)
        except KnowledgeBaseBusy as exc:
            raise busy(kb, "another process is writing it") from exc
        except KnowledgeBaseError as exc:
            if kb not in state.kb_names():  # deleted meanwhile by another process
                raise ApiError(404, f"knowledge base {kb!r} does not exist", "not_found_error",
                               "kb_not_found") from exc
            raise
    return {"deleted": kb}


@router.get("/{kb}/documents")
def list_documents(request: Request, kb: str, key: ApiKey = Depends(require_key)) -> dict:
    store = state_of(request).open_kb(key, kb)
    return {"object": "list", "data": [{"name": name, "chunks": r.chunks,
                                        "updated_at": r.updated_at}
                                       for name, r in _documents(store)]}


@router.delete("/{kb}/documents/{name:path}")
def remove_document(request: Request, kb: str, name: str,
                    key: ApiKey = Depends(require_key)) -> dict:
    state = state_of(request)
    store = state.open_kb(key, kb)
    matches = [r for public, r in _documents(store) if public == name]
    if not matches:
        raise ApiError(404, f"no document {name!r} in knowledge base {kb!r}", "not_found_error",
                       "document_not_found")
    if len(matches) > 1:
        raise ApiError(409, f"{name!r} names {len(matches)} documents; remove them with the CLI",
                       "invalid_request_error", "ambiguous_document")
    with state.guards.now_or_409(kb):
        if writer_busy(store.folder):
            raise busy(kb, "another process is writing it")
        chunks = state.service.remove_document(kb, matches[0].source)
    return {"removed": name, "chunks": chunks}


@router.post("/{kb}/documents", status_code=202)
async def upload_documents(request: Request, kb: str,
                           key: ApiKey = Depends(require_key)) -> JSONResponse:
    state = state_of(request)
    await run_in_threadpool(state.open_kb, key, kb)
    limit = state.settings.kb.max_file_mb * 1024 * 1024
    length = request.headers.get("content-length")
    if length is None:
        raise ApiError(411, "uploads need a Content-Length header", "invalid_request_error")
    if int(length) > limit + MULTIPART_SLACK:
        raise ApiError(413, f"the upload is over the {state.settings.kb.max_file_mb} MB limit",
                       "invalid_request_error", "too_large")
    form = await request.form(max_files=MAX_FILES, max_fields=10)
    parts = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
    if not parts:
        raise ApiError(422, "send the files as multipart form fields named 'files'",
                       "invalid_request_error", "no_files")
    for part in parts:
        try:
            sanitize_filename(part.filename or "")
        except UploadError as exc:
            raise ApiError(422, str(exc), "invalid_request_error", "bad_file") from exc
    if clash := duplicate_names(part.filename or "" for part in parts):
        raise ApiError(422, clash, "invalid_request_error", "duplicate_name")
    folder = state.jobs.staging()
    try:
        uploads = [(part.filename or "", await run_in_threadpool(_stage, part, folder / str(n),
                                                                 limit, state.settings.kb.max_file_mb))
                   for n, part in enumerate(parts)]
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    job = state.jobs.submit(kb, uploads, folder)
    return JSONResponse(job.view(), status_code=202)


def _stage(part: UploadFile, target: Path, limit: int, limit_mb: int) -> Path:
    """Copy one part (spooled by the form parser) to `target` on disk; 413 / 422 if unusable."""
    part.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(part.file, out, 1024 * 1024)
    size = target.stat().st_size
    if size > limit:
        raise ApiError(413, f"{part.filename!r} is over the {limit_mb} MB limit",
                       "invalid_request_error", "too_large")
    if not size:
        raise ApiError(422, f"{part.filename!r} is empty", "invalid_request_error", "bad_file")
    return target


@router.get("/{kb}/jobs/{job_id}")
def job_status(request: Request, kb: str, job_id: str,
               key: ApiKey = Depends(require_key)) -> dict:
    state = state_of(request)
    state.open_kb(key, kb)
    job = state.jobs.get(kb, job_id)
    if job is None:
        raise ApiError(404, f"no ingestion job {job_id!r} in knowledge base {kb!r}",
                       "not_found_error", "job_not_found")
    return job.view()


@router.get("/{kb}/jobs")
def list_jobs(request: Request, kb: str, key: ApiKey = Depends(require_key)) -> dict:
    """The knowledge base's newest ingestion jobs, newest first (e.g. to find interrupted ones)."""
    state = state_of(request)
    state.open_kb(key, kb)
    return {"object": "list", "data": [job.view() for job in state.jobs.recent(kb, LIST_JOBS)]}
