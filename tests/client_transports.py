"""httpx transports for testing the client against the in-process app: a relay to a sync
client (the Starlette ``TestClient``), canned refusals before the real answers, and answers
released in reverse order of arrival, so that order-keeping is proven, not assumed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

import httpx

Canned = Callable[[httpx.Request], httpx.Response | None]
HOP_HEADERS = {"host", "content-length", "connection", "accept-encoding"}
HOLD_LIMIT_S = 60  # a held request goes on by then even if its window never filled


class Relay(httpx.BaseTransport):
    """Sends each request through ``client``; ``canned`` may answer it first instead."""

    def __init__(self, client: Any, canned: Canned = lambda _: None) -> None:
        """``client`` has httpx's ``request`` method (Starlette's ``TestClient`` is not an
        ``httpx.Client``, so it cannot be passed to the embedding client directly)."""
        self.client = client
        self.canned = canned
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self.requests.append(request)
        answer = self.canned(request)
        if answer is not None:
            return answer
        headers = {key: value for key, value in request.headers.items() if key.lower() not in HOP_HEADERS}
        relayed = self.client.request(request.method, str(request.url), headers=headers, content=request.content)
        headers = {key: value for key, value in relayed.headers.items() if key.lower() != "content-length"}
        return httpx.Response(relayed.status_code, headers=headers, content=relayed.content)


class AsyncRelay(httpx.AsyncBaseTransport):
    """The async face of a sync transport: each request runs in a worker thread."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        sync_request = httpx.Request(request.method, request.url, headers=request.headers, content=content)
        response = await asyncio.to_thread(self.transport.handle_request, sync_request)
        return httpx.Response(response.status_code, headers=response.headers, content=response.read())


def refusals(*statuses: int, retry_after: str | None = None) -> Canned:
    """Answer the first requests with ``statuses`` in turn (a ``detail`` each), then let them through."""
    left = list(statuses)
    lock = threading.Lock()

    def canned(_: httpx.Request) -> httpx.Response | None:
        with lock:
            if not left:
                return None
            status = left.pop(0)
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return httpx.Response(status, headers=headers, json={"detail": f"refused with {status} on purpose"})

    return canned


class Reversing(httpx.BaseTransport):
    """Holds POST requests until ``window`` of them are in flight, then answers them last
    first (a GET, such as the client's model lookup, goes straight through).

    ``finished`` lists the POSTs' arrival positions in the order answered; ``peak`` is the
    most of them in flight at once."""

    def __init__(self, relay: Relay, window: int) -> None:
        self.relay = relay
        self.window = window
        self.finished: list[int] = []
        self.peak = 0
        self._turns: list[threading.Event] = []
        self._in_flight = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return self.relay.handle_request(request)
        with self._lock:
            position = len(self._turns)
            turn = threading.Event()
            self._turns.append(turn)
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
            if len(self._turns) % self.window == 0:
                turn.set()  # the last of a full window goes first
        turn.wait(HOLD_LIMIT_S)
        response = self.relay.handle_request(request)
        with self._lock:
            self._in_flight -= 1
            self.finished.append(position)
            if position % self.window:
                self._turns[position - 1].set()
        return response
