"""ASGI middleware that receives each request body whole, within a byte cap and a deadline,
before the app (and the concurrency limit inside it) sees the request.

A request is only admitted once its body is in memory, so clients that send headers and then
stall, or trickle their body, hold a socket for at most the deadline and never one of the
``EMBEDDING_MAX_CONCURRENCY`` slots of requests that are being worked on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable

from embedding_server.http_api.error_bodies import error_payload
from embedding_server.http_api.errors import ApiError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The body grew past the cap while it was being received."""


async def receive_body(receive: Receive, max_bytes: int | None = None) -> list[bytes] | None:
    """The body's chunks, in order, or ``None`` if the client disconnected first.

    Raises :class:`BodyTooLarge` as soon as more than ``max_bytes`` have arrived.
    """
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if max_bytes is not None and received > max_bytes:
            raise BodyTooLarge
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks


def replaying(chunks: list[bytes], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``chunks`` as the request body, then defers to ``receive``
    (which reports the client's disconnect)."""
    pending = deque({"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks)
    pending.append({"type": "http.request", "body": b"", "more_body": False})

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay


async def refuse(scope: Scope, send: Send, error: ApiError) -> None:
    """Answer ``error`` (in the shape of the path's API) and close the connection, whose body
    may be unread."""
    status, body = error_payload(scope["path"], error)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def body_timed_out(timeout_s: float) -> str:
    return f"Request body not received within {timeout_s:g} seconds"


class BodyLimitMiddleware:
    """413 when ``Content-Length`` or the received body exceeds ``max_bytes``; 408 when the
    body has not fully arrived ``timeout_s`` seconds after the headers."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.too_large = f"Request body too large: exceeds {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await refuse(scope, send, ApiError(413, self.too_large))
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                chunks = await receive_body(receive, self.max_bytes)
        except TimeoutError:
            await refuse(scope, send, ApiError(408, body_timed_out(self.timeout_s)))
            return
        except BodyTooLarge:
            await refuse(scope, send, ApiError(413, self.too_large))
            return
        if chunks is not None:  # None: the client has gone, there is no one to answer
            replay = replaying(chunks, receive)
            del chunks  # the replay holds the body now, and lets each chunk go once handed out
            await self.app(scope, replay, send)
