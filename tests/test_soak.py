"""Mixed soak on a real ``bentoml serve``: hostile clients beside ordinary ones.

While a few clients send hostile requests of every class the server defends against (huge
words, unencodable text, images of extreme shapes and depths, tiny and escaping videos, FIFOs,
never-ending downloads, invalid ports, over-deep JSON, stalled uploads), ordinary text and
image clients must keep getting 200 with a p99 latency within twice that of a run without the
hostile clients; every hostile request gets a designed answer, and afterwards nothing has
leaked: no temporary files, no threads, resident memory within 10 %.

In the run without them, as many clients send ordinary requests in their place: on a small
machine any extra client costs the others CPU, and the check is about what hostility costs,
not about the load of two more clients.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import random
import socket
import string
import subprocess
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from helpers import TEST_MODEL_ID as MODEL
from helpers import embedding_body
from local_http import serve_handler
from samples import b64, encoded, random_image
from serving import served, tree_rss_bytes
from video_samples import index_video, write_video

pytestmark = pytest.mark.e2e
ORDINARY_REQUESTS = 100  # per ordinary client and phase
LATENCY_FACTOR = 2.0
MEMORY_GROWTH_LIMIT = 0.10
THREAD_SLACK = 8  # thread pools may still be filling up to their fixed sizes
URL_TOTAL_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
STALLED_UPLOADS = 8
EXTRA_OFFSETS = (0, 9)  # two hostile (or extra ordinary) clients, starting at different bodies
UNDESIGNED = 500


def _item(item: dict, model: str = MODEL) -> bytes:
    """A request body; ``json.dumps`` escapes lone surrogates, so they arrive as sent."""
    return json.dumps(embedding_body(item, model)).encode()


def _random_word(length: int) -> str:
    return "".join(random.choices(string.ascii_lowercase, k=length))


def _image_b64(image: Image.Image, fmt: str = "PNG", **options: object) -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return b64(buffer.getvalue())


def _animated_gif(frames: int) -> str:
    images = [Image.new("P", (8, 8), color=index % 256) for index in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=10)
    return b64(buffer.getvalue())


class _Trickle(BaseHTTPRequestHandler):
    """``/endless``: a 200 whose body never ends, one byte at a time."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\x89")
                self.wfile.flush()
                time.sleep(0.05)  # the trickle's pace: this server is the slow party
        except OSError:
            return

    def log_message(self, *args: object) -> None:
        """Quiet."""


@dataclass
class Place:
    root: Path
    temp: Path
    outside: Path


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Place:
    base = tmp_path_factory.mktemp("soak")
    root, temp, outside = base / "root", base / "temp", base / "outside"
    for directory in (root, temp, outside):
        directory.mkdir(mode=0o755)
    index_video(root / "clip.mp4", frames=20)
    index_video(outside / "secret.mp4", frames=20)
    (root / "escape.mp4").symlink_to(outside / "secret.mp4")
    os.mkfifo(root / "pipe.mp4")
    return Place(root, temp, outside)


@pytest.fixture(scope="module")
def trickle_url() -> Iterator[str]:
    with serve_handler(_Trickle) as url:
        yield url


@pytest.fixture(scope="module")
def server(tiny_entry: Path, place: Place, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, subprocess.Popen]]:
    env = {**os.environ, "EMBEDDING_MODEL_NAME": MODEL, "EMBEDDING_VIDEO_ROOT": str(place.root),
           "EMBEDDING_VIDEO_TEMP_DIR": str(place.temp), "EMBEDDING_URL_ALLOWED_HOSTS": "127.0.0.1",
           "EMBEDDING_URL_TOTAL_TIMEOUT_S": str(URL_TOTAL_TIMEOUT_S),
           "EMBEDDING_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with served(env, tmp_path_factory.mktemp("soak-log") / "server.log") as running:
        yield running


def hostile_bodies(place: Place, trickle_url: str, tmp: Path) -> list[tuple[str, bytes]]:
    """One request of every hostile class: (name, raw JSON body)."""
    tiny_video = write_video(tmp / "tiny.mp4", (np.full((8, 8, 3), i, np.uint8) for i in range(4)), 4)
    deep = b'{"model": "' + MODEL.encode() + b'", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    sixteen_bit = Image.fromarray(np.random.default_rng(1).integers(0, 65535, (600, 600), np.uint16))
    return [
        ("long word", _item({"type": "text", "text": _random_word(100_000)})),
        ("many long words", _item({"type": "text", "text": [_random_word(20_000) for _ in range(20)]})),
        ("lone surrogate text", _item({"type": "text", "text": "cat \ud800 dog"})),
        ("lone surrogate model", _item({"type": "text", "text": "cat"}, model="CLIP/\udc00")),
        ("lone surrogate path", _item({"type": "video_file", "video_path": "clip\ud800.mp4"})),
        ("lone surrogate url", _item({"type": "image_url", "image_url": "http://127.0.0.1/\udfff"})),
        ("60000x1 image", _item({"type": "image_base64",
                                 "image_base64": _image_b64(Image.new("RGB", (60000, 1), "red"))})),
        ("1x60000 image", _item({"type": "image_base64",
                                 "image_base64": _image_b64(Image.new("RGB", (1, 60000), "blue"))})),
        ("16-bit image", _item({"type": "image_base64", "image_base64": _image_b64(sixteen_bit)})),
        ("animated gif", _item({"type": "image_base64", "image_base64": _animated_gif(1000)})),
        ("format off the allow-list", _item({"type": "image_base64",
                                             "image_base64": _image_b64(random_image(64, 64), "TGA")})),
        ("8-pixel video", _item({"type": "video_base64", "video_base64": b64(tiny_video.read_bytes())})),
        ("symlink out of the root", _item({"type": "video_file", "video_path": "escape.mp4"})),
        ("fifo in the root", _item({"type": "video_file", "video_path": "pipe.mp4"})),
        ("dot-dot path", _item({"type": "video_file", "video_path": "../outside/secret.mp4"})),
        ("never-ending download", _item({"type": "image_url", "image_url": f"{trickle_url}/endless"})),
        ("port above 65535", _item({"type": "image_url", "image_url": "http://127.0.0.1:70000/x.png"})),
        ("over-deep json", deep),
    ]


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    ordinary: list[int | str] = field(default_factory=list)
    extra: dict[str, list[int | str]] = field(default_factory=dict)

    def p99(self) -> float:
        return float(np.percentile(self.latencies, 99))


async def _ordinary_client(client: httpx.AsyncClient, body: dict, phase: Phase) -> None:
    for _ in range(ORDINARY_REQUESTS):
        begin = time.monotonic()
        try:
            status: int | str = (await client.post("/embeddings", json=body)).status_code
        except httpx.TransportError as error:
            status = type(error).__name__
        phase.latencies.append(time.monotonic() - begin)
        phase.ordinary.append(status)


async def _extra_client(client: httpx.AsyncClient, bodies: list[tuple[str, bytes]], offset: int,
                        phase: Phase, until: asyncio.Future) -> None:
    """Sends ``bodies`` in turn, from ``offset`` on, until the ordinary clients are done."""
    order = bodies[offset:] + bodies[:offset]
    for name, body in itertools.cycle(order):
        if until.done():
            return
        try:
            response = await client.post("/embeddings", content=body,
                                         headers={"content-type": "application/json"})
            json.loads(response.content.decode("utf-8"))  # a JSON body, valid UTF-8
            outcome: int | str = response.status_code
        except (httpx.TransportError, ValueError) as error:
            outcome = type(error).__name__
        phase.extra.setdefault(name, []).append(outcome)


def _stall_uploads(url: str, count: int) -> list[socket.socket]:
    """Connections that send headers and a first part of the body, then nothing."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    stalled = []
    for _ in range(count):
        connection = socket.create_connection((host, port))
        connection.sendall(b"POST /embeddings HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100000\r\n\r\n{\"model\": ")
        stalled.append(connection)
    return stalled


TEXT = embedding_body({"type": "text", "text": "a photo of a cat"})
IMAGE = embedding_body({"type": "image_base64", "image_base64": b64(encoded(random_image(320, 240, seed=4)))})
ORDINARY_BODIES = [("text", json.dumps(TEXT).encode()), ("image", json.dumps(IMAGE).encode())]


async def _run_phase(url: str, extra: list[tuple[str, bytes]]) -> Phase:
    """Three measured ordinary clients, and two more clients sending ``extra`` meanwhile."""
    phase = Phase()
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        ordinary = asyncio.ensure_future(asyncio.gather(
            _ordinary_client(client, TEXT, phase), _ordinary_client(client, TEXT, phase),
            _ordinary_client(client, IMAGE, phase)))
        others = [_extra_client(client, extra, offset % len(extra), phase, ordinary)
                  for offset in EXTRA_OFFSETS]
        await asyncio.gather(ordinary, *others)
    return phase


def _threads(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(process.num_threads() for process in [root, *root.children(recursive=True)])


def test_hostile_clients_neither_slow_nor_break_ordinary_ones(server, place, trickle_url, tmp_path):
    url, process = server
    hostile = hostile_bodies(place, trickle_url, tmp_path)
    asyncio.run(_run_phase(url, hostile))  # warm-up: pools, caches and lazy imports fill once
    quiet = asyncio.run(_run_phase(url, ORDINARY_BODIES))
    rss, threads = tree_rss_bytes(process.pid), _threads(process.pid)

    stalled = _stall_uploads(url, STALLED_UPLOADS)
    try:
        attacked = asyncio.run(_run_phase(url, hostile))
        stalled_answers = [connection.recv(4096) for connection in stalled]  # answered by the deadline
    finally:
        for connection in stalled:
            connection.close()
    asyncio.run(_run_phase(url, ORDINARY_BODIES))  # settle, then look for what stayed behind

    assert set(quiet.ordinary) == {200} and set(attacked.ordinary) == {200}, attacked.ordinary
    assert {name: set(outcomes) for name, outcomes in quiet.extra.items()} == {"text": {200}, "image": {200}}
    assert attacked.p99() <= LATENCY_FACTOR * quiet.p99(), (attacked.p99(), quiet.p99())
    assert len(attacked.extra) == len(hostile), sorted(attacked.extra)
    for name, outcomes in attacked.extra.items():
        assert all(isinstance(o, int) and o != UNDESIGNED for o in outcomes), (name, outcomes)
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in stalled_answers), stalled_answers
    assert list(place.temp.iterdir()) == []
    assert tree_rss_bytes(process.pid) <= rss * (1 + MEMORY_GROWTH_LIMIT), (rss, tree_rss_bytes(process.pid))
    assert _threads(process.pid) <= threads + THREAD_SLACK, (threads, _threads(process.pid))
