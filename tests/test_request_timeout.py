"""The traffic time-out: 504 with a ``detail`` before the response starts, none after, and no
timer left behind per request."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import httpx

from embedding_server.http_api.request_timeout import RequestTimeoutMiddleware, timed_out

TIMEOUT_S = 0.05


async def stuck(scope, receive, send) -> None:
    await asyncio.Event().wait()  # never answers


async def slow_body(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(3 * TIMEOUT_S)  # the body outlasts the time-out on purpose
    await send({"type": "http.response.body", "body": b"done"})


async def quick(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def get(app) -> httpx.Response:
    transport = httpx.ASGITransport(app=RequestTimeoutMiddleware(app, timeout=TIMEOUT_S))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/")


def test_a_request_without_a_response_in_time_gets_504_with_detail():
    response = asyncio.run(get(stuck))
    assert response.status_code == 504
    assert response.json() == {"detail": timed_out(TIMEOUT_S)}


def test_a_started_response_is_not_cut_off():
    response = asyncio.run(get(slow_body))
    assert (response.status_code, response.content) == (200, b"done")


def test_no_timer_outlives_its_request():
    async def scenario() -> list[asyncio.TimerHandle]:
        for _ in range(20):
            assert (await get(quick)).status_code == 200
        # The loop's timer heap (private, but the only place such a leak is visible).
        return [handle for handle in asyncio.get_running_loop()._scheduled if not handle.cancelled()]

    assert asyncio.run(scenario()) == []


class RequestLike:
    """Holds the ``send`` it was given, as Starlette's ``Request`` does."""

    def __init__(self, send) -> None:
        self.send = send


def test_a_request_does_not_keep_the_previous_one_alive():
    """uvicorn resumes reading a connection from inside a request, so the next request's task
    starts in a copy of that request's context, which holds the request (BentoML keeps it in a
    context variable). The middleware must not link a request back to its own task."""
    current = contextvars.ContextVar("current_request")
    captured: list[contextvars.Context] = []

    async def app(scope, receive, send) -> None:
        token = current.set(RequestLike(send))
        captured.append(contextvars.copy_context())  # what resuming the reader would capture
        await quick(scope, receive, send)
        current.reset(token)  # back to the inherited value: the previous request

    async def scenario() -> tuple[weakref.ref, contextvars.Context]:
        limited = RequestTimeoutMiddleware(app, timeout=60)

        async def send(message) -> None:
            """The client side: discards the response."""

        async def one() -> None:
            await limited({"type": "http"}, None, send)

        await asyncio.create_task(one())
        first = weakref.ref(captured[0].get(current))
        for _ in range(3):
            await asyncio.create_task(one(), context=captured[-1].copy())
        latest = captured[-1]  # the connection's reader keeps the latest such context
        captured.clear()
        gc.collect()
        return first, latest

    first, _latest = asyncio.run(scenario())
    assert first() is None


def test_service_uses_it_for_bentoml_traffic_timeouts(service_module):
    from bentoml._internal.server.http import traffic

    assert traffic.TimeoutMiddleware is RequestTimeoutMiddleware
