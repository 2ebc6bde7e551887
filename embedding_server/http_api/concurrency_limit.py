"""ASGI middleware that answers 429 to requests beyond a concurrency limit, instead of queueing
them without bound.

It replaces BentoML's ``traffic.max_concurrency`` on the entry service so that the refusal has
the API's error shape (BentoML answers ``{"error": "Too many requests"}``) and
only limits the paths that do heavy work: ``/health`` and the model-status routes stay
answerable however busy the server is. It runs inside ``BodyLimitMiddleware``, so a request
takes a slot only once its whole body has arrived.
"""

from __future__ import annotations

from typing import Collection

from embedding_server.http_api.body_limit import ASGIApp, Receive, Scope, Send
from embedding_server.http_api.error_bodies import error_response
from embedding_server.http_api.errors import ApiError

RETRY_AFTER_S = 1


def too_many_requests(limit: int) -> str:
    return (f"Too many requests: the server is already processing {limit} requests, "
            f"its limit; retry later")


class ConcurrencyLimitMiddleware:
    """At most ``max_concurrency`` requests to ``paths`` in flight; 429 for the others."""

    def __init__(self, app: ASGIApp, max_concurrency: int, paths: Collection[str]) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.paths = frozenset(paths)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            refusal = error_response(scope["path"], ApiError(429, too_many_requests(self.max_concurrency)),
                                     headers={"Retry-After": str(RETRY_AFTER_S)})
            await refusal(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
