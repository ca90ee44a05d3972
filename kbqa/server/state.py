"""What every endpoint shares: the service, the backend, the queue, the keys; and the access checks.

Access rule: a key may touch a knowledge base only if its list allows the name. A name the key is
not allowed is answered 403 whether or not it exists, so a key learns nothing about other
knowledge bases, not even their names; 404 is only said about names the key is allowed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from kbqa.config import Settings
from kbqa.server.auth import ApiKey, KeyStore
from kbqa.server.backends import Backend
from kbqa.server.jobs import Jobs
from kbqa.server.limits import SCOPE_KEY, UNAUTHENTICATED, bearer_key
from kbqa.server.queue import GenerationQueue

if TYPE_CHECKING:
    from kbqa.kb.store import KnowledgeBase
    from kbqa.service import KbqaService


class ApiError(Exception):
    """An error answered in OpenAI's shape with this HTTP status."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.headers = headers or {}


class KbGuards:
    """One lock per knowledge base for this server's writers (ingestion jobs, deletes, removals).

    Per base, never server-wide: a write to one base never delays a request for another. A delete
    or removal that finds its base's guard held answers 409 at once instead of waiting.
    """

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()  # guards the dict only, never held across a write

    def _of(self, name: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(name, threading.Lock())

    @contextmanager
    def held(self, name: str) -> Iterator[None]:
        """Hold the base's guard for the block, waiting for it (ingestion jobs run in order)."""
        lock = self._of(name)
        with lock:
            yield

    @contextmanager
    def now_or_409(self, name: str) -> Iterator[None]:
        """Hold the base's guard for the block, or answer 409 if a write of this server holds it."""
        lock = self._of(name)
        if not lock.acquire(blocking=False):
            raise busy(name)
        try:
            yield
        finally:
            lock.release()


def busy(name: str, detail: str = "an ingestion job is writing it") -> ApiError:
    return ApiError(409, f"knowledge base {name!r} is busy ({detail}); try again when it has "
                    "finished (see GET /v1/kbs/{kb}/jobs)", "invalid_request_error", "kb_busy")


@dataclass
class ServerState:
    settings: Settings
    service: KbqaService
    backend: Backend
    queue: GenerationQueue
    keys: KeyStore
    jobs: Jobs
    guards: KbGuards = field(default_factory=KbGuards)

    def kb_names(self) -> list[str]:
        return self.service.list_knowledge_bases()

    def open_kb(self, key: ApiKey, name: str) -> KnowledgeBase:
        """The knowledge base `name` if `key` may use it: 403 if not allowed, 404 if absent
        (also when it is deleted while being opened)."""
        if not key.allows(name):
            raise ApiError(403, f"this API key is not allowed knowledge base {name!r}",
                           "permission_error", "kb_not_allowed")
        missing = ApiError(404, f"knowledge base {name!r} does not exist", "not_found_error",
                           "kb_not_found")
        if name not in self.service.list_knowledge_bases():
            raise missing
        try:
            return self.service.knowledge_base(name)
        except Exception as exc:
            if name not in self.service.list_knowledge_bases():
                raise missing from exc
            raise


def state_of(request: Request) -> ServerState:
    return request.app.state.kbqa


def require_key(request: Request) -> ApiKey:
    """FastAPI dependency: the caller's key, already checked by the KeyFirst middleware before
    the body was read (kbqa.server.limits); looked up here only when that did not run."""
    key = request.scope.get("state", {}).get(SCOPE_KEY)
    if key is None:
        key = bearer_key(state_of(request).keys, request.headers.get("authorization"))
    if key is None:
        raise ApiError(401, *UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    return key
