"""Checks made before a request's body is read: the API key, then the body's size.

FastAPI reads and parses a JSON body before it runs any dependency, so a key checked as a
dependency came after the server had already held whatever an anonymous client sent. This ASGI
middleware answers 401 for a missing or wrong key on every /v1 route before one body byte is
read, refuses a declared Content-Length over the route's cap with 413, and counts the bytes of a
body sent without one (chunked), stopping at the cap. The caps: `max_body_mb` for JSON routes,
`max_file_mb` (plus multipart framing) for uploads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kbqa.server.auth import ApiKey, KeyStore

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file bytes
SCOPE_KEY = "kbqa.api_key"  # where the middleware leaves the caller's key for `require_key`
UNAUTHENTICATED = ("missing or invalid API key (send 'Authorization: Bearer KEY')",
                   "authentication_error", "invalid_api_key")
_UPLOAD = re.compile(r"^/v1/kbs/[^/]+/documents/?$")


class BodyTooLarge(HTTPException):
    """The body passed its cap while being read (raised from `receive`, answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the {limit}-byte limit")


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}},
                      ensure_ascii=False).encode()


async def _answer(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
                  ) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def bearer_key(keys: KeyStore, authorization: str | None) -> ApiKey | None:
    scheme, _, token = (authorization or "").partition(" ")
    return keys.lookup(token.strip()) if scheme.lower() == "bearer" else None


class KeyFirst:
    """ASGI middleware: key, then size, before the app reads the body (see the module doc)."""

    def __init__(self, app: ASGIApp, keys: KeyStore, json_limit: Callable[[], int],
                 upload_limit: Callable[[], int]) -> None:
        self.app, self.keys = app, keys
        self.json_limit, self.upload_limit = json_limit, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = bearer_key(self.keys, headers.get("authorization"))
        if key is None:
            await _answer(send, 401, error_body(*UNAUTHENTICATED), {"WWW-Authenticate": "Bearer"})
            return
        scope.setdefault("state", {})[SCOPE_KEY] = key
        upload = scope["method"] == "POST" and bool(_UPLOAD.match(scope["path"]))
        limit = self.upload_limit() + MULTIPART_SLACK if upload else self.json_limit()
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            message = ("the upload is over the max_file_mb limit" if upload
                       else f"the request body is over the {limit}-byte limit (setting max_body_mb)")
            await _answer(send, 413, error_body(message, "invalid_request_error", "too_large"))
            return
        await self.app(scope, _counted(receive, limit), send)


def _counted(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message: dict[str, Any] = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted
