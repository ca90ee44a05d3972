"""What every endpoint shares: the service, the backend, the queue, the keys; and the access checks.

Access rule: a key may touch a knowledge base only if its list allows the name. A name the key is
not allowed is answered 403 whether or not it exists, so a key learns nothing about other
knowledge bases, not even their names; 404 is only said about names the key is allowed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from kbqa.config import Settings
from kbqa.server.auth import ApiKey, KeyStore
from kbqa.server.backends import Backend
from kbqa.server.jobs import Jobs
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


@dataclass
class ServerState:
    settings: Settings
    service: KbqaService
    backend: Backend
    queue: GenerationQueue
    keys: KeyStore
    jobs: Jobs
    kb_lock: threading.RLock = field(default_factory=threading.RLock)

    def kb_names(self) -> list[str]:
        with self.kb_lock:
            return self.service.list_knowledge_bases()

    def open_kb(self, key: ApiKey, name: str) -> KnowledgeBase:
        """The knowledge base `name` if `key` may use it: 403 if not allowed, 404 if absent."""
        if not key.allows(name):
            raise ApiError(403, f"this API key is not allowed knowledge base {name!r}",
                           "permission_error", "kb_not_allowed")
        with self.kb_lock:
            if name not in self.service.list_knowledge_bases():
                raise ApiError(404, f"knowledge base {name!r} does not exist", "not_found_error",
                               "kb_not_found")
            return self.service.knowledge_base(name)


def state_of(request: Request) -> ServerState:
    return request.app.state.kbqa


def require_key(request: Request) -> ApiKey:
    """FastAPI dependency: the caller's key from `Authorization: Bearer KEY`, else 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key = state_of(request).keys.lookup(token.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')",
                       "authentication_error", "invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    return key
