"""POST /v1/chat/completions and GET /v1/models: the OpenAI-compatible part of the API.

With `kb`, the passages are retrieved first (outside the generation queue: retrieval is cheap and
its errors should come before any streaming), then the QA chain answers from exactly those passages
and the response carries them as `sources`. Without `kb`, the model answers the last user message
as it is. Generation waits in the bounded queue and runs in a worker thread; an answer, streamed or
not, holds its place until it ends or the client goes away (then generation stops at the next
token). Every message is capped at `max_question_chars` characters (422 beyond). A `Meter`
follows each generation, so the answer carries the real `finish_reason` and token `usage` (see
kbqa/server/usage.py).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.runnables import RunnableConfig
from starlette.concurrency import run_in_threadpool

from kbqa.errors import KbqaError, KnowledgeBaseError
from kbqa.llm.stop import StopSignal
from kbqa.qa.answers import Source
from kbqa.qa.chain import fixed_context, qa_chain
from kbqa.qa.grounding import Grounding
from kbqa.server import schemas
from kbqa.server.auth import ApiKey
from kbqa.server.kbs import source_view
from kbqa.server.queue import QueueFull, Ticket
from kbqa.server.redact import without_paths
from kbqa.server.state import ApiError, ServerState, require_key, state_of
from kbqa.server.usage import Meter

router = APIRouter()
_END = object()  # end of a streamed answer
DISCONNECT_POLL_S = 0.25  # how often a non-streamed answer checks that its client is still there


@router.get("/v1/models")
def list_models(request: Request, _: ApiKey = Depends(require_key)) -> dict[str, Any]:
    names = state_of(request).backend.names()
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                        "owned_by": "kbqa"} for name in names]}


def _retrieve(state: ServerState, key: ApiKey, body: schemas.ChatRequest) -> list[Any] | None:
    """The passages; once more on a freshly opened base if it was replaced while searching."""
    if body.kb is None:
        return None
    for attempt in (1, 2):
        kb = state.open_kb(key, body.kb)
        try:
            return state.service.retrieve(body.question, body.kb, body.top_k, body.history)
        except KnowledgeBaseError:
            if attempt == 2 or state.open_kb(key, body.kb) is kb:  # not replaced: a real error
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _check_lengths(state: ServerState, body: schemas.ChatRequest) -> None:
    limit = state.settings.server.max_question_chars
    for number, message in enumerate(body.messages, 1):
        if len(message.text) > limit:
            raise ApiError(422, f"message {number} has {len(message.text)} characters, over the "
                           f"{limit}-character limit (setting max_question_chars)",
                           "invalid_request_error", "message_too_long")


def _overrides(llm: Any, body: schemas.ChatRequest) -> Any:
    update: dict[str, Any] = {}
    if body.temperature is not None:
        update["temperature"] = body.temperature
    if body.top_p is not None:
        update["top_p"] = body.top_p
    if body.new_tokens is not None:
        update["max_new_tokens"] = body.new_tokens
    if body.stop:
        update["stop"] = [*llm.stop, *body.stop]
    return llm.model_copy(update=update) if update else llm


def _tokens(state: ServerState, body: schemas.ChatRequest, docs: list[Any] | None,
            ticket: Ticket, meter: Meter, cancelled: threading.Event) -> Iterator[str | Grounding]:
    """The answer's text pieces, then (answers from a KB) the grounding check's verdict; holds a
    generation slot and the variant while it runs."""
    with ticket.running():
        if cancelled.is_set():  # the client left while this waited for a slot
            return
        with state.backend.activate(body.model, meter) as llm:
            llm = _overrides(llm, body)
            stop = StopSignal()  # a client that leaves stops the model at its next token
            config: RunnableConfig = {"callbacks": [stop]}
            if docs is None:
                pieces = (piece for piece in llm.stream(body.question, config=config) if piece)
            else:
                chain = qa_chain(state.settings, fixed_context(docs), llm,
                                 library=state.service.library(body.kb))
                parts = chain.stream({"question": body.question, "history": body.history},
                                     config=config)
                pieces = (piece for part in parts
                          for piece in (part.get("answer"), part.get("grounded")) if piece)
            try:
                yield from pieces
            finally:
                stop.stop()
                pieces.close()


class ClientGone(Exception):
    """The client of a non-streamed answer disconnected; its generation was stopped."""


async def _collect(request: Request, out: queue.SimpleQueue,
                   cancelled: threading.Event) -> tuple[str, Grounding | None]:
    """The whole answer (the grounded one where the check ran) and the check's verdict, from the
    generation thread, checking between waits that the client is still there: if it left, stop
    the generation (which frees its queue place)."""
    parts: list[str] = []
    grounded: Grounding | None = None
    checked = time.monotonic()
    try:
        while True:
            item = await run_in_threadpool(_next, out, DISCONNECT_POLL_S)
            if item is _END:
                return (grounded.text if grounded else "".join(parts).strip()), grounded
            if isinstance(item, Exception):
                raise item
            if isinstance(item, Grounding):
                grounded = item
            elif item is not None:
                parts.append(item)
            # on a clock, not only when tokens pause: a model that never pauses would otherwise
            # write its whole answer for a client that has gone
            if time.monotonic() - checked >= DISCONNECT_POLL_S:
                checked = time.monotonic()
                if await request.is_disconnected():
                    raise ClientGone
    finally:
        cancelled.set()


def _next(out: queue.SimpleQueue, timeout: float) -> object:
    try:
        return out.get(timeout=timeout)
    except queue.Empty:
        return None


def _pump(tokens: Iterator[str | Grounding], ticket: Ticket, out: queue.SimpleQueue,
          cancelled: threading.Event) -> None:
    """Run a streamed generation in its own thread, which alone touches the generator.

    Once `cancelled` is set (the client went away) it stops at the next token; either way it
    closes the generator (freeing the model), gives the queue place back and ends with _END.
    """
    try:
        for piece in tokens:
            if cancelled.is_set():
                break
            out.put(piece)
    except Exception as exc:  # handed to the response, which reports it to the client
        out.put(exc)
    finally:
        tokens.close()
        ticket.release()
        out.put(_END)


def _event(data: dict[str, Any], include_usage: bool) -> str:
    """One SSE event; with include_usage every chunk but the usage one says `"usage": null`."""
    if include_usage:
        data.setdefault("usage", None)
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(body: schemas.ChatRequest, out: queue.SimpleQueue, cancelled: threading.Event,
               sources: list[dict] | None, meter: Meter) -> AsyncIterator[str]:
    cid, with_usage = schemas.new_id(), body.include_usage
    try:
        first = schemas.chunk(cid, body.model, {"role": "assistant", "content": ""}, sources=sources)
        yield _event(first, with_usage)
        grounded: Grounding | None = None
        while (item := await run_in_threadpool(out.get)) is not _END:
            if isinstance(item, Exception):
                raise item
            if isinstance(item, Grounding):
                grounded = item
                continue
            yield _event(schemas.chunk(cid, body.model, {"content": item}), with_usage)
        # the draft has streamed; a client that knows kbqa replaces it with the checked answer
        last = schemas.chunk(cid, body.model, {}, finish=meter.finish_reason,
                             grounding=schemas.grounding_view(grounded),
                             answerability=meter.answerability)
        yield _event(last, with_usage)
        usage = meter.usage()
        if with_usage and usage is not None:
            yield _event(schemas.usage_chunk(cid, body.model, usage), with_usage)
        yield "data: [DONE]\n\n"
    except Exception as exc:  # the status line is sent: report in the stream, OpenAI's way
        message = (without_paths(str(exc)) if isinstance(exc, KbqaError)
                   else f"generation failed unexpectedly ({type(exc).__name__})")
        yield f"data: {json.dumps(schemas.error(message, 'server_error'), ensure_ascii=False)}\n\n"
    finally:  # done, failed or the client went away: stop generating
        cancelled.set()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, body: schemas.ChatRequest,
                           key: ApiKey = Depends(require_key)) -> Any:
    state = state_of(request)
    if body.model not in state.backend.names():
        raise ApiError(404, f"model {body.model!r} is not served here; see GET /v1/models",
                       "invalid_request_error", "model_not_found")
    _check_lengths(state, body)
    docs = await run_in_threadpool(_retrieve, state, key, body)
    sources = None if docs is None else [source_view(Source.from_document(d, body.question))
                                         for d in docs]
    try:
        ticket = state.queue.admit()
    except QueueFull as exc:
        raise ApiError(503, str(exc), "server_busy", "queue_full",
                       headers={"Retry-After": str(exc.retry_after)}) from exc
    meter = Meter()
    cancelled = threading.Event()
    out: queue.SimpleQueue = queue.SimpleQueue()
    tokens = _tokens(state, body, docs, ticket, meter, cancelled)
    threading.Thread(target=_pump, args=(tokens, ticket, out, cancelled), daemon=True,
                     name="kbqa-generate").start()
    if body.stream:
        return StreamingResponse(_sse(body, out, cancelled, sources, meter),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        text, grounded = await _collect(request, out, cancelled)
    except ClientGone:
        return JSONResponse(schemas.error("the client went away", "client_gone"), status_code=499)
    return JSONResponse(schemas.completion(schemas.new_id(), body.model, text, sources,
                                           meter.finish_reason, meter.usage(),
                                           grounding=schemas.grounding_view(grounded),
                                           answerability=meter.answerability))
