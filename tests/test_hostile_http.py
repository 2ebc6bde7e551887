"""Hostile HTTP input: slow uploads, hung DNS, invalid ports, JSON that crashes parsers.

Every case gets a deliberate 4xx with a ``{"detail": ...}`` body, and slow or stalled clients
never take the slots of requests that are being worked on.
"""

from __future__ import annotations

import asyncio
import base64
import os
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from embedding_server.http_api.body_limit import BodyLimitMiddleware, body_timed_out
from embedding_server.http_api.concurrency_limit import ConcurrencyLimitMiddleware
from embedding_server.http_api.errors import ApiError
from embedding_server.media.remote import fetch_url
from embedding_server.settings import Settings
from helpers import TEST_MODEL_ID as MODEL
from serving import served
from video_samples import index_video

JSON = {"content-type": "application/json"}
BODY_TIMEOUT_S = 8


def _embedding_body(item: str) -> bytes:
    return b'{"model": "%s", "input": %s, "encoding_format": "float"}' % (MODEL.encode(), item.encode())


# --- JSON the parser would crash on: 422 at the body layer, for every route ---


def test_deeply_nested_json_is_invalid_input(api_client) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = api_client.post("/embeddings", content=_embedding_body(deep), headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid input data: malformed JSON body (depth limit exceeded")
    # Nested a little less than the parser's limit, the schema judges the body as usual.
    shallower = "[" * 1000 + "]" * 1000
    response = api_client.post("/embeddings", content=_embedding_body(shallower), headers=JSON)
    assert response.status_code == 422 and "malformed JSON" not in response.json()["detail"]
    # Brackets inside strings, escaped quotes included, are text, not nesting.
    text = '{"type": "text", "text": "%s"}' % ("[{" * 500 + '\\"' + "[" * 100)
    assert api_client.post("/embeddings", content=_embedding_body(text), headers=JSON).status_code == 200


def test_body_that_is_not_utf8_is_invalid_input(api_client) -> None:
    response = api_client.post("/embeddings", content=b'{"model": "\xff\xfe"}', headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid input data: malformed JSON body (")


@pytest.fixture(scope="module")
def video_b64(tmp_path_factory: pytest.TempPathFactory) -> str:
    clip = index_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames=20, fps=10)
    return base64.b64encode(clip.read_bytes()).decode()


@pytest.mark.parametrize("segment", ['{"num_frames": %s}' % ("9" * 5000),
                                     '{"frame_indexes": [3, -%s]}' % ("1" * 4301)])
def test_integer_beyond_pythons_digit_limit_is_invalid_input(api_client, video_b64: str, segment: str) -> None:
    item = '{"type": "video_base64", "video_base64": "%s", "segment_config": %s}' % (video_b64, segment)
    response = api_client.post("/embeddings", content=_embedding_body(item), headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid input data: malformed JSON body (")


# --- ports that httpx parses but no socket can use ---


@pytest.mark.parametrize("url", ["http://example.com:70000/x.png", "http://example.com:0/x.png",
                                 "http://example.com:-1/x.png", "http://example.com:99999999999/x.png",
                                 "http://127.0.0.1:65536/x.png"])
def test_invalid_port_is_refused_before_any_lookup(api_client, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError("looked up a URL with an invalid port")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    item = '{"type": "image_url", "image_url": "%s"}' % url
    response = api_client.post("/embeddings", content=_embedding_body(item), headers=JSON)
    assert response.status_code == 422
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert response.json()["detail"] == f"Invalid input data: image URL port {port} is not between 1 and 65535"


# --- hung DNS look-ups: their own threads, their own deadline ---


def test_hung_dns_lookups_neither_stall_decoding_nor_outlive_their_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def hung_getaddrinfo(*args: object, **kwargs: object) -> list:
        started.release()
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hung_getaddrinfo)
    settings = Settings(url_connect_timeout_s=1.0, url_dns_threads=2)

    async def scenario() -> list[tuple[BaseException | bytes, float]]:
        # Few decoding threads, so that lookups sharing them would take every one.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
        begun = time.monotonic()

        async def answered(n: int) -> tuple[BaseException | bytes, float]:
            """The look-up's answer and the seconds it took to come."""
            try:
                answer: BaseException | bytes = await fetch_url(f"http://hung-{n}.test/x.png",
                                                                max_bytes=1024, settings=settings)
            except ApiError as error:
                answer = error
            return answer, time.monotonic() - begun

        lookups = [asyncio.create_task(answered(n)) for n in range(4)]
        await asyncio.to_thread(started.acquire, timeout=10)  # the first look-up is running
        # A bound that only stops a hang: decoding sharing the hung threads would wait 30 s.
        decoded = await asyncio.wait_for(asyncio.to_thread(sum, range(10)), timeout=10)
        assert decoded == 45
        assert not any(lookup.done() for lookup in lookups)  # decoded before any look-up's deadline
        return await asyncio.gather(*lookups)

    try:
        results = asyncio.run(scenario())
    finally:
        release.set()
    answers, seconds = [answer for answer, _ in results], [took for _, took in results]
    assert all(isinstance(answer, ApiError) and answer.status_code == 408 for answer in answers), answers
    assert answers[0].detail == "Timed out resolving image URL host hung-0.test (limit 1 s)"
    # Two look-ups ran in the two DNS threads; the two queued behind them were answered at their
    # deadline too, about when the running ones were, not when a thread came free (30 s).
    assert max(seconds) < 2 * min(seconds), seconds


# --- slow uploads: 408 at the body deadline, and no concurrency slot while stalled ---


def _asgi_app_behind_the_limits(limit: int, body_timeout_s: float):
    async def app(scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})

    limited = ConcurrencyLimitMiddleware(app, max_concurrency=limit, paths=("/embeddings",))
    return BodyLimitMiddleware(limited, max_bytes=1 << 20, timeout_s=body_timeout_s)


def test_stalled_bodies_get_408_and_hold_no_slot() -> None:
    async def scenario() -> None:
        app = _asgi_app_behind_the_limits(limit=1, body_timeout_s=2.0)
        stall = asyncio.Event()
        sent: list[list[dict]] = []

        def stalled_receive():
            parts = [{"type": "http.request", "body": b'{"half": ', "more_body": True}]

            async def receive() -> dict:
                if parts:
                    return parts.pop()
                await stall.wait()
                return {"type": "http.disconnect"}
            return receive

        def recorder(into: list[dict]):
            async def send(message: dict) -> None:
                into.append(message)
            return send

        scope = {"type": "http", "method": "POST", "path": "/embeddings",
                 "headers": [(b"content-length", b"100")]}
        stalled = []
        for _ in range(3):
            sent.append([])
            stalled.append(asyncio.create_task(app(scope, stalled_receive(), recorder(sent[-1]))))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/embeddings", content=b"x" * 10)
        assert (response.status_code, response.text) == (200, "10")
        assert not any(sent)  # the stalled ones are still waiting for their bodies
        # Only a guard against a hang: without the body deadline they would wait for ever.
        await asyncio.wait_for(asyncio.gather(*stalled), timeout=30)
        stall.set()
        for messages in sent:
            start, body = messages
            assert start["status"] == 408
            assert (b"connection", b"close") in start["headers"]
            assert body["body"] == b'{"detail":"%s"}' % body_timed_out(2.0).encode()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def small_server(tiny_entry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "EMBEDDING_MODEL_NAME": MODEL, "EMBEDDING_MAX_CONCURRENCY": "2",
           "EMBEDDING_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with served(env, log) as (url, _):
        yield url


def _stalled_upload(url: str) -> socket.socket:
    """A connection that sent its headers and a third of its body, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    connection.sendall(b"POST /embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 300\r\n\r\n" + b'{"model": "' + b"a" * 89)
    return connection


def _read_response(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def _serve_ordinary_clients(url: str) -> float:
    """Seconds taken to embed three ordinary texts one after the other (each asserted 200)."""
    body = _embedding_body('{"type": "text", "text": "a photo of a cat"}')
    started = time.monotonic()
    for _ in range(3):
        response = httpx.post(f"{url}/embeddings", content=body, headers=JSON, timeout=30)
        assert response.status_code == 200, response.text
    return time.monotonic() - started


@pytest.mark.e2e
def test_stalled_uploads_over_the_limit_leave_real_clients_served(small_server: str) -> None:
    quiet_s = _serve_ordinary_clients(small_server)  # the baseline: nobody stalling
    stalled = [_stalled_upload(small_server) for _ in range(8)]  # four times the limit
    try:
        opened = time.monotonic()
        _serve_ordinary_clients(small_server)
        # Real clients were answered before the stalled ones' deadline: no stalled connection
        # has been written to or closed yet.
        assert select.select(stalled, [], [], 0)[0] == []
        answers = [_read_response(connection) for connection in stalled]
        answered_s = time.monotonic() - opened
    finally:
        for connection in stalled:
            connection.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b'{"detail":"%s"}' % body_timed_out(BODY_TIMEOUT_S).encode())
    # The stalled ones got their 408 at the deadline, then were closed (not held until the
    # client gave up after 30 s).
    assert answered_s < BODY_TIMEOUT_S + 10 * quiet_s, (answered_s, quiet_s)
