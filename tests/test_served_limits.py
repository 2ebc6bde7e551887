"""The limits of the served app, against a real ``bentoml serve`` of the tiny model with small
``EMBEDDING_*`` limits: 429 beyond the concurrency limit (status routes never limited), 413
for bodies and images over their byte caps, 422 over the pixel and text caps, 504 at the
request time-out, 503 when the Encoder path sheds load, and ``/health`` while the Encoder is
dead and after BentoML has restarted it.

Each check goes through the real wiring (settings read by ``service.py``, middlewares added
in ``api.py``, the time-out installed into BentoML), so removing any of it fails a test here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import orjson
import psutil
import pytest
from PIL import Image

from helpers import embed, embedding_body, vectors_of
from local_http import serve_held, serve_routes
from samples import b64, encoded, random_image
from serving import START_TIMEOUT_S, arbiter_paused, poll, served, service_worker, wait_for_status

pytestmark = pytest.mark.e2e

MAX_CONCURRENCY = 2
MAX_BODY_BYTES = 64 * 1024
MAX_IMAGE_BYTES = 8 * 1024
MAX_IMAGE_PIXELS = 100 * 100
MAX_TEXT_ITEMS = 4
MAX_TEXT_CHARS = 1_000
MAX_REQUEST_TEXT_CHARS = 2_000
TEXT_CUT_CHARS = 77 * 32  # CLIP's context x EMBEDDING_TEXT_CHARS_PER_TOKEN
# Above /health's own 5 s wait for the Encoder, so that a dead Encoder is a 500, not a 504.
REQUEST_TIMEOUT_S = 8
LIMITS = {
    "EMBEDDING_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
    "EMBEDDING_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "EMBEDDING_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
    "EMBEDDING_MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
    "EMBEDDING_MAX_TEXT_ITEMS": str(MAX_TEXT_ITEMS),
    "EMBEDDING_MAX_TEXT_CHARS": str(MAX_TEXT_CHARS),
    "EMBEDDING_MAX_REQUEST_TEXT_CHARS": str(MAX_REQUEST_TEXT_CHARS),
    "EMBEDDING_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
    "EMBEDDING_BODY_TIMEOUT_S": "4",  # must be below the request time-out
}
# The shortest wait the settings allow, and Encoder batches of two images: a burst queues
# behind the calls in flight for far longer than 10 ms.
SHEDDING = {"EMBEDDING_MAX_LATENCY_MS": "10", "EMBEDDING_IMAGE_MAX_BATCH_SIZE": "2"}
BURST = 96
CLIENT_TIMEOUT_S = 60
DIMENSION = 512
STATUS_ROUTES = ("/health", "/models", "/model/current", "/model/capabilities")
TEXT = {"type": "text", "text": "a photo of a cat"}
OVERLOADED = {"detail": "The encoder is overloaded; retry later"}
NOT_HEALTHY = (500, {"detail": "Model is not healthy"})
JSON = {"content-type": "application/json"}


def solid_png(width: int, height: int) -> bytes:
    """A one-colour PNG: a few hundred bytes whatever its size in pixels."""
    return encoded(Image.new("RGB", (width, height), (120, 30, 200)))


SMALL_PNG = solid_png(64, 64)  # under every cap


def shown(response: httpx.Response) -> str:
    """The start of a response body for an assertion message (a 200's vector is long)."""
    return response.text[:300]


@pytest.fixture
def shedding_server(tiny_entry: Path, tmp_path: Path) -> Iterator[str]:
    """Only one test uses this configuration: its server stops as soon as that test ends."""
    with served({**os.environ, **SHEDDING}, tmp_path / "server.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def limited_server(tiny_entry: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    with served({**os.environ, **LIMITS}, tmp_path_factory.mktemp("limits") / "server.log") as served_at:
        yield served_at


@pytest.fixture
def client(limited_server: tuple[str, subprocess.Popen]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited_server[0], timeout=CLIENT_TIMEOUT_S) as http:
        yield http


# --- 503: the Encoder path sheds requests that waited longer than EMBEDDING_MAX_LATENCY_MS ---


def test_a_burst_beyond_the_max_latency_is_shed_with_503(shedding_server: str) -> None:
    body = embedding_body({"type": "image_base64", "image_base64": b64(encoded(random_image(64, 64)))})

    async def burst() -> list[tuple[int, dict]]:
        limits = httpx.Limits(max_connections=BURST)
        async with httpx.AsyncClient(base_url=shedding_server, limits=limits,
                                     timeout=CLIENT_TIMEOUT_S) as http:
            responses = await asyncio.gather(*(http.post("/embeddings", json=body) for _ in range(BURST)))
        return [(response.status_code, response.json()) for response in responses]

    answers = asyncio.run(burst())
    shed = [payload for status, payload in answers if status == 503]
    embedded = [payload for status, payload in answers if status == 200]
    assert len(shed) + len(embedded) == BURST, sorted({status for status, _ in answers})
    assert shed and all(payload == OVERLOADED for payload in shed), shed[:3]
    assert all(len(payload["embedding"]) == DIMENSION for payload in embedded)


# --- 429 beyond EMBEDDING_MAX_CONCURRENCY; the status routes are never limited ---


def test_requests_beyond_the_concurrency_limit_get_429_and_status_routes_are_never_limited(
        client: httpx.Client) -> None:
    with serve_held((200, SMALL_PNG, "image/png")) as held, ThreadPoolExecutor(MAX_CONCURRENCY) as pool:
        holding = [pool.submit(embed, client, {"type": "image_url", "image_url": f"{held.url}/{n}.png"})
                   for n in range(MAX_CONCURRENCY)]
        for _ in holding:  # each slot is taken by a request waiting for its image
            assert held.arrived.acquire(timeout=CLIENT_TIMEOUT_S), "a request never fetched its image"
        refused = embed(client, TEXT)
        assert refused.status_code == 429, shown(refused)
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"detail": "Too many requests: the server is already processing "
                                            f"{MAX_CONCURRENCY} requests, its limit; retry later"}
        for route in STATUS_ROUTES:
            answer = client.get(route)
            assert answer.status_code == 200, (route, shown(answer))
        held.release.set()
        assert all(vectors_of(request.result()).shape == (DIMENSION,) for request in holding)
    assert vectors_of(embed(client, TEXT)).shape == (DIMENSION,)  # the slots are free again


# --- 504 at EMBEDDING_REQUEST_TIMEOUT_S, in the API's detail shape ---


def test_a_request_not_answered_within_the_time_out_gets_504(client: httpx.Client) -> None:
    with serve_held((200, SMALL_PNG, "image/png")) as held:
        sent = time.monotonic()
        response = embed(client, {"type": "image_url", "image_url": f"{held.url}/never.png"})
        waited_s = time.monotonic() - sent
        assert held.arrived.acquire(timeout=0)  # it was waiting for its image all along
    assert response.status_code == 504, shown(response)
    assert response.json() == {"detail": f"The request did not complete within {REQUEST_TIMEOUT_S} seconds"}
    assert waited_s >= REQUEST_TIMEOUT_S
    assert vectors_of(embed(client, TEXT)).shape == (DIMENSION,)


# --- 413: request body over EMBEDDING_MAX_BODY_BYTES, image over EMBEDDING_MAX_IMAGE_BYTES ---


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_gets_413(client: httpx.Client, chunked: bool) -> None:
    body = orjson.dumps(embedding_body({"type": "text", "text": "a" * MAX_BODY_BYTES}))
    assert len(body) > MAX_BODY_BYTES
    response = client.post("/embeddings", content=iter([body]) if chunked else body, headers=JSON)
    assert response.status_code == 413, shown(response)
    assert response.json() == {"detail": f"Request body too large: exceeds {MAX_BODY_BYTES} bytes"}


@pytest.mark.parametrize("source", ["image_base64", "image_url"])
def test_an_image_over_its_byte_cap_gets_413(client: httpx.Client, source: str) -> None:
    noise = encoded(random_image(64, 64))  # a noise PNG does not compress
    assert MAX_IMAGE_BYTES < len(noise) and len(b64(noise)) < MAX_BODY_BYTES
    with serve_routes({"/noise.png": (200, noise, "image/png")}) as base:
        reference = b64(noise) if source == "image_base64" else f"{base}/noise.png"
        response = embed(client, {"type": source, source: reference})
    assert response.status_code == 413, shown(response)
    assert response.json() == {"detail": f"Image too large: exceeds {MAX_IMAGE_BYTES} bytes"}


# --- 422: image over EMBEDDING_MAX_IMAGE_PIXELS, texts over their caps ---


def test_an_image_over_the_pixel_cap_gets_422_and_one_at_the_cap_embeds(client: httpx.Client) -> None:
    over = embed(client, {"type": "image_base64", "image_base64": b64(solid_png(101, 100))})
    assert over.status_code == 422, shown(over)
    assert over.json() == {"detail": "Invalid input data: image of 101x100 pixels exceeds the limit of "
                                     f"{MAX_IMAGE_PIXELS} pixels"}
    at_cap = embed(client, {"type": "image_base64", "image_base64": b64(solid_png(100, 100))})
    assert vectors_of(at_cap).shape == (DIMENSION,)


@pytest.mark.parametrize("texts, detail", [
    (["a" * (MAX_TEXT_CHARS + 1)],
     f"text[0] has {MAX_TEXT_CHARS + 1} characters, over the limit of {MAX_TEXT_CHARS}"),
    (["a dog"] * (MAX_TEXT_ITEMS + 1),
     f"too many texts: {MAX_TEXT_ITEMS + 1} > {MAX_TEXT_ITEMS} per request"),
    (["a" * 700] * 3, f"the texts hold 2100 characters (each cut at {TEXT_CUT_CHARS}), over the limit of "
                      f"{MAX_REQUEST_TEXT_CHARS} per request"),
], ids=["text-too-long", "too-many-texts", "request-text-cap"])
def test_texts_over_their_caps_get_422(client: httpx.Client, texts: list[str], detail: str) -> None:
    response = embed(client, {"type": "text", "text": texts})
    assert response.status_code == 422, shown(response)
    assert response.json() == {"detail": f"Invalid input data: {detail}"}


def test_texts_at_every_text_cap_embed(client: httpx.Client) -> None:
    texts = ["a" * (MAX_REQUEST_TEXT_CHARS // MAX_TEXT_ITEMS)] * MAX_TEXT_ITEMS
    assert vectors_of(embed(client, {"type": "text", "text": texts})).shape == (MAX_TEXT_ITEMS, DIMENSION)


# --- /health while the Encoder is dead, and after BentoML has restarted it ---


def test_health_is_500_while_the_encoder_is_dead_and_200_once_bentoml_restarts_it(
        limited_server: tuple[str, subprocess.Popen], client: httpx.Client) -> None:
    _, process = limited_server
    encoder = service_worker(process.pid, "encoder")
    assert client.get("/health").status_code == 200
    # While the arbiter is paused the dead Encoder cannot be replaced, however fast a new one
    # would start: /health is asked while no Encoder exists.
    with arbiter_paused(process):
        encoder.send_signal(signal.SIGKILL)
        wait_for_status(encoder, {psutil.STATUS_ZOMBIE})
        dead = client.get("/health")
    assert (dead.status_code, dead.json()) == NOT_HEALTHY
    answers: list[httpx.Response] = []

    def healthy() -> bool:
        answers.append(client.get("/health"))
        return answers[-1].status_code == 200

    assert poll(healthy, START_TIMEOUT_S, interval_s=0.5), f"no Encoder again within {START_TIMEOUT_S}s"
    assert all((answer.status_code, answer.json()) == NOT_HEALTHY for answer in answers[:-1])
    assert answers[-1].json() == {"status": "healthy"}
    assert service_worker(process.pid, "encoder").pid != encoder.pid
    assert vectors_of(embed(client, TEXT)).shape == (DIMENSION,)
    image = embed(client, {"type": "image_base64", "image_base64": b64(SMALL_PNG)})
    assert vectors_of(image).shape == (DIMENSION,)
