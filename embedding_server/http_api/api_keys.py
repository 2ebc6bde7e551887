"""ASGI middleware that admits only requests bearing one of the configured API keys.

``Authorization: Bearer <key>``, the scheme the OpenAI SDKs and their clients send. The given
key is hashed and its digest compared with every configured key's digest in constant time, so
neither the outcome's timing nor a key's length tells an attacker how close a guess came.
Keys appear in no message and no log line. It runs outside the body limit, so a request without
a valid key is refused before its body is received.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Collection

from embedding_server.http_api.body_limit import ASGIApp, Receive, Scope, Send
from embedding_server.http_api.error_bodies import error_response
from embedding_server.http_api.errors import INVALID_API_KEY, ApiError

MISSING_KEY = "Missing API key: send the header 'Authorization: Bearer <key>'"
WRONG_KEY = "Invalid API key"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def bearer_token(scope: Scope) -> bytes | None:
    """The credentials of the request's ``Authorization: Bearer`` header, if it has one."""
    header = dict(scope.get("headers") or []).get(b"authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyMiddleware:
    """401 for requests to any path but ``open_paths`` without one of ``keys``."""

    def __init__(self, app: ASGIApp, keys: Collection[str], open_paths: Collection[str]) -> None:
        self.app = app
        self._digests = [_digest(key.encode()) for key in keys]
        self._open_paths = frozenset(open_paths)

    def _known(self, token: bytes) -> bool:
        given = _digest(token)
        found = False
        for digest in self._digests:  # every key compared, whichever matches
            found |= hmac.compare_digest(digest, given)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is not None and self._known(token):
            await self.app(scope, receive, send)
            return
        error = ApiError(401, MISSING_KEY if token is None else WRONG_KEY, code=INVALID_API_KEY)
        await error_response(scope["path"], error, headers=CHALLENGE)(scope, receive, send)
