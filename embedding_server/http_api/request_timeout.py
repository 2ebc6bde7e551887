"""The traffic time-out of both services: 504 with a ``detail`` body, and no timer left behind.

BentoML 1.4.40's ``TimeoutMiddleware`` (installed for ``traffic.timeout``) starts a
``loop.call_later`` timer per request and never cancels it. The timer holds a copy of the
request's context (its tracing span and, through it, the request's objects, about 20-30 KB)
until it fires, so under sustained load memory grows by requests-per-second x timeout
(hundreds of MB at a few hundred requests/s and the default two minutes). This middleware
keeps the behaviour (a request that has not started its response within ``timeout`` seconds
is cancelled and answered 504) with ``asyncio.timeout``, whose timer is disarmed as soon as
the response starts, and answers in the shape of the path's API (``{"detail": ...}``, or OpenAI's on ``/v1/*``).
"""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http import traffic
from embedding_server.http_api.body_limit import ASGIApp, Message, Receive, Scope, Send
from embedding_server.http_api.error_bodies import error_response
from embedding_server.http_api.errors import ApiError


def timed_out(timeout_s: float) -> str:
    return f"The request did not complete within {timeout_s:g} seconds"


class RequestTimeoutMiddleware:
    """504 for a request whose response has not started within ``timeout`` seconds."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        deadline: asyncio.Timeout | None = asyncio.timeout(self.timeout)
        responding = False

        async def send_disarming(message: Message) -> None:
            nonlocal responding
            if not responding and deadline is not None:
                responding = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, send_disarming)
        except TimeoutError:
            if responding or not deadline.expired():
                raise
            await error_response(scope.get("path", ""), ApiError(504, timed_out(self.timeout)))(scope, receive, send)
        finally:
            # The request object keeps send_disarming, and asyncio can copy the request's
            # context (holding that request) into the next request's task on the same
            # connection. Without this, each request would keep the previous one alive through
            # deadline -> its task -> its context: an ever-growing chain.
            deadline = None


def install() -> None:
    """Make BentoML build its services' traffic time-out from :class:`RequestTimeoutMiddleware`.

    BentoML imports the class from this module each time it assembles a service's ASGI app, so
    this must run before the services start (``service.py`` calls it at import).
    """
    if not hasattr(traffic, "TimeoutMiddleware"):
        raise RuntimeError("bentoml._internal.server.http.traffic.TimeoutMiddleware is gone: "
                           "re-check embedding_server/http_api/request_timeout.py against this BentoML version")
    traffic.TimeoutMiddleware = RequestTimeoutMiddleware
