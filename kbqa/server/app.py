"""The FastAPI application of `kbqa serve`, and the function that runs it under uvicorn.

`create_app` loads everything heavy once (embedder, model, every configured adapter) before the
first request, so a bad adapter fails at start and requests never race to load the shared model.
Every error is answered in OpenAI's error shape, so the official clients raise typed exceptions,
unknown routes and unexpected failures included; a 500 never carries a server path.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from kbqa.config import Settings
from kbqa.errors import KbqaError, KnowledgeBaseBusy, KnowledgeBaseMissing, KnowledgeBaseReplaced
from kbqa.server import chat, kbs, schemas
from kbqa.server.auth import KeyStore
from kbqa.server.backends import make_backend
from kbqa.server.jobs import JobProgress, Jobs
from kbqa.server.jobstore import JobStore
from kbqa.server.limits import KeyFirst
from kbqa.server.queue import GenerationQueue
from kbqa.server.redact import without_paths
from kbqa.server.state import ApiError, KbGuards, ServerState

if TYPE_CHECKING:
    from kbqa.service import KbqaService

THREADS_BESIDES_QUEUE = 16  # request threads left free while every queued request waits in one
STATE_DIRNAME = "serve"  # HOME/serve: what the server keeps between runs (ingestion jobs)
log = logging.getLogger(__name__)


def _error(status: int, message: str, kind: str, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(schemas.error(message, kind, code), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
                             for e in exc.errors())
        return _error(422, f"invalid request: {problems}", "invalid_request_error", "invalid_body")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:  # no such route: OpenAI's words for it
            return _error(404, f"Invalid URL ({request.method} {request.url.path})",
                          "invalid_request_error", "unknown_url")
        code = {405: "method_not_allowed", 413: "too_large"}.get(exc.status_code)
        return _error(exc.status_code, str(exc.detail), "invalid_request_error", code,
                      dict(exc.headers or {}))

    @app.exception_handler(KnowledgeBaseBusy)
    async def busy(_: Request, exc: KnowledgeBaseBusy) -> JSONResponse:
        return _error(409, without_paths(str(exc)), "invalid_request_error", "kb_busy")

    @app.exception_handler(KnowledgeBaseMissing)
    async def missing(_: Request, exc: KnowledgeBaseMissing) -> JSONResponse:
        return _error(404, without_paths(str(exc)), "not_found_error", "kb_not_found")

    @app.exception_handler(KnowledgeBaseReplaced)
    async def replaced(_: Request, exc: KnowledgeBaseReplaced) -> JSONResponse:
        return _error(409, without_paths(str(exc)), "invalid_request_error", "kb_replaced")

    @app.exception_handler(KbqaError)
    async def failed(_: Request, exc: KbqaError) -> JSONResponse:
        return _error(500, without_paths(str(exc)), "server_error")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"the server failed unexpectedly ({type(exc).__name__}); see its log",
                      "server_error")


def create_app(settings: Settings, service: KbqaService | None = None) -> FastAPI:
    """The app over `service` (a KbqaService; built from `settings` when not given)."""
    from kbqa.service import KbqaService

    service = service or KbqaService(settings)
    backend = make_backend(service, settings)
    service.embeddings  # noqa: B018 - load once now, not in the first request's thread
    backend.prepare()
    queue = GenerationQueue(settings.server.concurrency, settings.server.queue)
    guards = KbGuards()

    def ingest(kb: str, uploads: list[tuple[str, Any]], progress: JobProgress) -> Any:
        with guards.held(kb):  # this base only: other bases' requests never wait on it
            return service.ingest_uploads(kb, uploads, on_progress=progress.file,
                                          on_page=progress.page)

    keys = KeyStore(settings.keys_path)
    state = ServerState(settings=settings, service=service, backend=backend, queue=queue,
                        keys=keys, guards=guards,
                        jobs=Jobs(ingest, JobStore(settings.home / STATE_DIRNAME)))
    state.jobs.run_in_worker(lambda: _sweep_uploads(service, guards))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, queue.capacity + THREADS_BESIDES_QUEUE)
        yield
        state.jobs.shutdown()

    app = FastAPI(title="kbqa", version="0.1.0", lifespan=lifespan)
    app.state.kbqa = state
    app.add_middleware(KeyFirst, keys=keys,
                       json_limit=lambda: state.settings.server.max_body_mb * 1024 * 1024,
                       upload_limit=lambda: state.settings.kb.max_file_mb * 1024 * 1024)
    _install_error_handlers(app)
    app.include_router(chat.router)
    app.include_router(kbs.router)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and load; no key needed, so it names no knowledge base."""
        return {"status": "ok", "models": len(backend.names()), "queue": queue.stats()}

    return app


def _sweep_uploads(service: KbqaService, guards: KbGuards) -> None:
    """At start: remove uploaded files a crash left unindexed (kbqa.kb.uploads.sweep_orphans)."""
    from kbqa.kb.uploads import sweep_orphans

    for name in service.list_knowledge_bases():
        try:
            with guards.held(name):
                removed = sweep_orphans(service.knowledge_base(name))
        except KbqaError as exc:  # busy or broken: the next upload to it sweeps again
            log.warning("could not sweep knowledge base %r: %s", name, exc)
            continue
        if removed:
            log.warning("knowledge base %r: removed %d uploaded file(s) a crash left unindexed",
                        name, len(removed))


def serve(settings: Settings) -> None:
    """Run the API under uvicorn until interrupted (refuses to start without any API key)."""
    import uvicorn

    if not len(KeyStore(settings.keys_path)):
        raise KbqaError(f"no API keys in {settings.keys_path}: create one first with "
                        "`kbqa keys add NAME --allow KB` (use '*' to allow every knowledge base)")
    uvicorn.run(create_app(settings), host=settings.server.host, port=settings.server.port,
                log_level="info")


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread until the block ends; yields the base URL.

    For tests, benchmarks and embedding: the same server `serve` runs, without a fixed port.
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise KbqaError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
