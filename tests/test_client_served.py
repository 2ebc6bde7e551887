"""The Python client and its command line against a real ``bentoml serve``: the session's
tiny CLIP (API keys on) and a tiny Qwen3-Embedding. Every method's vectors equal the
direct HTTP calls'; retries are proven through a proxy that answers 429/503 first; refusals
raise with the server's ``detail``; ``index`` and ``search`` run as a user runs them."""

from __future__ import annotations

import asyncio
import base64
import html.parser
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import embedding_client as ec
from helpers import QWEN_MODEL_ID, SERVED_API_KEY
from helpers import TEST_MODEL_ID as MODEL
from helpers import embedding_body
from local_http import serve_refusing_proxy, serve_routes
from samples import b64, distinct_images, encoded
from video_samples import index_video

pytestmark = pytest.mark.e2e
TEXTS = [f"text {index} about {topic}" for index, topic in
         enumerate(["cats", "bridges", "bread", "rivers", "kites", "owls", "lamps"])]
AUTH = {"Authorization": f"Bearer {SERVED_API_KEY}"}
CLOSE = {"rtol": 0, "atol": 2e-6}  # rows batched differently by the server differ in the last bits


def direct(url: str, item: dict, model: str = MODEL) -> np.ndarray:
    """``POST /embeddings``'s vectors of ``item`` as a ``(N, D)`` array."""
    response = httpx.post(f"{url}/embeddings", json=embedding_body(item, model), headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    return np.atleast_2d(np.array(response.json()["embedding"], dtype=np.float32))


def client_for(url: str, **options) -> ec.Client:
    return ec.Client(url, api_key=SERVED_API_KEY, **options)


@pytest.fixture(scope="module")
def video(keyed_server, tmp_path_factory) -> Path:
    """A 3 s, 10 fps video, also in the server's video root."""
    path = index_video(tmp_path_factory.mktemp("client-video") / "clip.mp4", frames=30, fps=10)
    shutil.copy(path, keyed_server.video_root / "clip.mp4")
    return path


def test_every_method_equals_the_direct_calls(keyed_server, video, tmp_path):
    url = keyed_server.url
    images = [encoded(image) for image in distinct_images()[:3]]
    (tmp_path / "a.png").write_bytes(images[0])
    with serve_routes({"/b.png": (200, images[1], "image/png")}) as media, \
            client_for(url, batch_size=2, max_concurrency=3) as client:
        texts = client.embed_texts(TEXTS)
        pictures = client.embed_images([tmp_path / "a.png", f"{media}/b.png", Image.open(io.BytesIO(images[2]))])
        local = client.embed_video(video, extraction_fps=2)
        on_server = client.embed_video(ec.ServerPath("clip.mp4"), frame_indexes=[29, 0, 0])
        ranked = client.rank(images[0], ["a cat", "a dog", "a bridge"], top_k=2)
    np.testing.assert_allclose(texts.vectors, direct(url, {"type": "text", "text": TEXTS}), **CLOSE)
    expected_images = np.concatenate([direct(url, {"type": "image_base64", "image_base64": b64(data)})
                                      for data in images])
    np.testing.assert_allclose(pictures.vectors, expected_images, **CLOSE)
    segment = {"extraction_fps": 2}
    np.testing.assert_allclose(local.vectors, direct(url, {"type": "video_base64", "video_base64": b64(
        video.read_bytes()), "segment_config": segment}), **CLOSE)
    assert local.frames == [0, 5, 10, 15, 20, 25] and local.timestamps == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert local.fps == pytest.approx(10)
    assert on_server.frames == [29, 0, 0] and on_server.timestamps == pytest.approx([2.9, 0.0, 0.0])
    np.testing.assert_allclose(on_server.vectors, direct(url, {"type": "video_file", "video_path": "clip.mp4",
                                                               "segment_config": {"frame_indexes": [29, 0, 0]}}),
                               **CLOSE)
    answer = httpx.post(f"{url}/rank", headers=AUTH, timeout=60, json={
        "model": MODEL, "query": {"type": "image_base64", "image_base64": b64(images[0])},
        "candidates": ["a cat", "a dog", "a bridge"], "top_k": 2}).json()
    assert [row.index for row in ranked.results] == [row["index"] for row in answer["results"]]
    np.testing.assert_allclose([row.probability for row in ranked.results],
                               [row["probability"] for row in answer["results"]], atol=1e-5)


def test_the_async_client_keeps_order_across_many_concurrent_requests(keyed_server):
    texts = [f"sentence number {index}" for index in range(40)]

    async def run() -> ec.Embeddings:
        async with ec.AsyncClient(keyed_server.url, api_key=SERVED_API_KEY, batch_size=3,
                                  max_concurrency=8) as client:
            return await client.embed_texts(texts)

    result = asyncio.run(run())
    np.testing.assert_allclose(result.vectors, direct(keyed_server.url, {"type": "text", "text": texts}), **CLOSE)


def test_429_and_503_from_the_network_are_retried(keyed_server):
    with serve_refusing_proxy(keyed_server.url, [429, 503, 503]) as proxy, \
            client_for(proxy.url, model=MODEL, retry=ec.RetryPolicy(attempts=4, initial_wait_s=0.01)) as client:
        result = client.embed_texts(TEXTS[:2])
    assert proxy.seen == [("POST", "/embeddings")] * 4
    np.testing.assert_allclose(result.vectors, direct(keyed_server.url, {"type": "text", "text": TEXTS[:2]}), **CLOSE)


def test_refusals_raise_typed_errors_with_the_servers_detail(keyed_server):
    with ec.Client(keyed_server.url, api_key="sk-wrong") as client:
        with pytest.raises(ec.AuthenticationError) as unauthorised:
            client.embed_texts(["x"])
    assert unauthorised.value.status_code == 401 and unauthorised.value.detail
    with client_for(keyed_server.url) as client:
        with pytest.raises(ec.NotFoundError) as missing:
            client.embed_video(ec.ServerPath("nowhere.mp4"))
        with pytest.raises(ec.BadRequestError) as mismatch:
            ec.Client(keyed_server.url, api_key=SERVED_API_KEY, model="CLIP/clip-vit-b-16").embed_texts(["x"])
    assert missing.value.detail.startswith("File not found:")
    assert mismatch.value.detail.startswith("Model mismatch: requested model 'CLIP/clip-vit-b-16'")


def test_a_text_model_embeds_texts_with_an_instruction_and_refuses_images(qwen_server):
    with ec.Client(qwen_server) as client:
        plain = client.embed_texts(TEXTS[:3])
        instructed = client.embed_texts(TEXTS[:3], instruction="Find the passage")
        with pytest.raises(ec.BadRequestError) as refused:
            client.embed_images([encoded(distinct_images()[0])])
    assert plain.model == QWEN_MODEL_ID
    np.testing.assert_allclose(plain.vectors, direct(qwen_server, {"type": "text", "text": TEXTS[:3]},
                                                     QWEN_MODEL_ID), **CLOSE)
    np.testing.assert_allclose(instructed.vectors, direct(qwen_server, {
        "type": "text", "text": TEXTS[:3], "instruction": "Find the passage"}, QWEN_MODEL_ID), **CLOSE)
    assert "image" in refused.value.detail.lower()


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMBEDDING_SERVER_URL": url, "EMBEDDING_API_KEY": SERVED_API_KEY}
    return subprocess.run([sys.executable, "-m", "embedding_client", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_index_and_search_a_folder_through_the_command_line(keyed_server, video, tmp_path):
    folder, db = tmp_path / "library", tmp_path / "index"
    (folder / "trips").mkdir(parents=True)
    for number, image in enumerate(distinct_images()[:4]):
        image.save(folder / ("trips" if number % 2 else ".") / f"photo{number}.png")
    shutil.copy(video, folder / "trips" / "clip.mp4")
    first = cli(keyed_server.url, "index", str(folder), "--db", str(db), "--quiet")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith("indexed 5, skipped 0 (unchanged), failed 0")
    again = cli(keyed_server.url, "index", str(folder), "--db", str(db), "--quiet")
    assert again.stdout.strip().endswith("indexed 0, skipped 5 (unchanged), failed 0")

    page = tmp_path / "results.html"
    found = cli(keyed_server.url, "search", "--image", str(folder / "trips" / "photo1.png"), "--db", str(db),
                "--top-k", "3", "--html", str(page))
    assert found.returncode == 0, found.stderr
    best = found.stdout.splitlines()[0].split()
    assert float(best[0]) > 0.999 and best[1] == str(folder / "trips" / "photo1.png")
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8"))
    assert len(parser.sources) == 3
    for source in parser.sources:
        header, data = source.split(",", 1)
        assert header == "data:image/jpeg;base64"
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
