"""End to end: a real ``bentoml serve`` subprocess (entry service + batching Encoder) over HTTP."""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import decord
import httpx
import numpy as np
import psutil
import pytest
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from helpers import TEST_MODEL_ID, embed, embedding_body, vectors_of
from local_http import serve_routes
from prometheus_text import observations_above, samples
from samples import b64, encoded, random_image, reference_images, reference_text, unit_cosines
from serving import REPO, free_port, serve_command, served, service_worker, stop
from video_samples import index_video

pytestmark = pytest.mark.e2e
MODEL = TEST_MODEL_ID
CONCURRENT_REQUESTS = 300
IMAGE_BURST = 48  # requests; every fourth holds three images
COALESCED = "embedding_coalesced_items"


@pytest.fixture(scope="module")
def served_server(tiny_entry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with served({**os.environ, "EMBEDDING_MODEL_NAME": MODEL}, log) as (url, process):
        yield url, process


@pytest.fixture(scope="module")
def server(served_server: tuple[str, subprocess.Popen]) -> str:
    return served_server[0]


def post(url: str, item: dict, model: str = MODEL) -> httpx.Response:
    return httpx.post(f"{url}/embeddings", json=embedding_body(item, model), timeout=60)


def test_status_routes(server):
    assert httpx.get(f"{server}/health").json() == {"status": "healthy"}
    models = httpx.get(f"{server}/models").json()
    assert models["total_models"] == 19 and models["current_model"] == MODEL
    current = httpx.get(f"{server}/model/current").json()
    assert (current["model"], current["device"], current["use_openvino"]) == (MODEL, "CPU", False)
    assert current["weights"] == "random"
    assert current["precision"] == "f32"  # the test session's EMBEDDING_PRECISION=exact
    assert httpx.get(f"{server}/model/capabilities").json()["supports_image"] is True


def mapped_files(pid: int) -> set[str]:
    """The files process ``pid`` has mapped (its loaded native libraries among them)."""
    return {mapping.path for mapping in psutil.Process(pid).memory_maps(grouped=True)}


def test_the_entry_worker_loads_no_engine(served_server):
    """The worker that decodes and resizes maps neither torch's nor OpenVINO's libraries, after
    serving an image; the Encoder, which runs the model, maps torch's."""
    url, process = served_server
    assert post(url, {"type": "image_base64", "image_base64": b64(encoded(random_image()))}).status_code == 200
    entry = mapped_files(service_worker(process.pid, "embedding_service").pid)
    encoder = mapped_files(service_worker(process.pid, "encoder").pid)
    assert any("libtorch" in path for path in encoder)
    assert not [path for path in entry if "libtorch" in path or "openvino" in path]


def test_served_vectors_equal_open_clip(server, reference_clip):
    texts = ["a photo of a cat", "a diagram"]
    vectors = np.array(post(server, {"type": "text", "text": texts}).json()["embedding"])
    assert (unit_cosines(vectors, reference_text(reference_clip, texts)) > 0.9999).all()
    image = random_image(seed=11)
    vector = np.array(post(server, {"type": "image_base64", "image_base64": b64(encoded(image))}).json()["embedding"])
    assert unit_cosines(vector, reference_images(reference_clip, [image]))[0] > 0.9999
    with serve_routes({"/img.png": (200, encoded(image), "image/png")}) as base:
        by_url = np.array(post(server, {"type": "image_url", "image_url": f"{base}/img.png"}).json()["embedding"])
    assert unit_cosines(by_url, vector)[0] > 0.9999


def test_errors_over_http(server):
    wrong = post(server, {"type": "text", "text": "a"}, model="CLIP/clip-vit-h-14")
    assert wrong.status_code == 400 and wrong.json()["detail"].startswith("Model mismatch")
    invalid = httpx.post(f"{server}/embeddings", content=b"{oops", headers={"content-type": "application/json"})
    assert invalid.status_code == 422 and invalid.json()["detail"].startswith("Invalid input data: ")
    refused = post(server, {"type": "image_url", "image_url": "http://169.254.169.254/x.png"})
    assert refused.status_code == 400


def test_video_frames_over_http_equal_open_clip(server, reference_clip, tmp_path):
    clip = index_video(tmp_path / "clip.mp4", frames=40, fps=10)
    item = {"type": "video_base64", "video_base64": b64(clip.read_bytes()), "segment_config": {"num_frames": 4}}
    vectors = np.array(post(server, item).json()["embedding"])
    frames = decord.VideoReader(str(clip)).get_batch([0, 13, 26, 39]).asnumpy()
    expected = reference_images(reference_clip, [Image.fromarray(frame) for frame in frames])
    assert vectors.shape == (4, 512)
    assert (unit_cosines(vectors, expected) > 0.9999).all()


def burst(url: str, items: list[dict]) -> list[httpx.Response]:
    """All ``items`` posted to ``/embeddings`` at once, each on its own connection."""
    async def all_at_once() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(items))
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
            return await asyncio.gather(*(embed(client, item) for item in items))

    return asyncio.run(all_at_once())


def one_at_a_time(url: str, items: list[dict]) -> np.ndarray:
    """The vector of each item, requested alone (one request in flight), stacked."""
    with httpx.Client(base_url=url, timeout=60) as client:
        return np.concatenate([np.atleast_2d(vectors_of(embed(client, item))) for item in items])


def assert_each_row_is_its_own_inputs(rows: np.ndarray, alone: np.ndarray) -> None:
    """Row i of a burst equals the vector of input i embedded alone, and the inputs' vectors are
    far enough apart that a row handed to another caller could not pass for theirs."""
    alone = alone / np.linalg.norm(alone, axis=1, keepdims=True)
    between = alone @ alone.T
    np.fill_diagonal(between, -1)
    assert between.max() < 0.999  # the tiny model's distinct inputs here: cosines below 0.998
    cosines = (rows / np.linalg.norm(rows, axis=1, keepdims=True)) @ alone.T
    assert (np.diagonal(cosines) > 0.9999).all()
    assert (cosines.argmax(axis=1) == np.arange(len(rows))).all()


def coalesced(url: str, modality: str) -> np.ndarray:
    """[items, Encoder calls of more than one item] that the entry's coalescer has sent for
    ``modality`` so far, from ``/metrics``."""
    page = httpx.get(f"{url}/metrics").text
    [items] = samples(page, f"{COALESCED}_sum", modality=modality)
    return np.array([items.value, observations_above(page, COALESCED, 1, modality=modality)])


def assert_the_encoder_batcher_never_merged(url: str, method: str) -> None:
    """With one entry worker the Encoder never has two calls of a method to merge: each
    worker's coalescer keeps one in flight (see README, "Architecture")."""
    page = httpx.get(f"{url}/metrics").text
    assert observations_above(page, "bentoml_service_adaptive_batch_size", 1, method_name=method) == 0


def distinct_texts(count: int) -> list[str]:
    """``count`` texts of four vocabulary words each, no word used twice: the tiny random model
    gives texts that differ in one token only (``caption 14``, ``caption 64``) nearly the same
    vector, texts of different words clearly different ones."""
    words = sorted(token.removesuffix("</w>") for token in SimpleTokenizer().encoder
                   if token.endswith("</w>") and len(token) >= 9 and token[:-4].isalpha())
    chosen = random.Random(7).sample(words, 4 * count)
    return [" ".join(chosen[4 * index:4 * index + 4]) for index in range(count)]


def text_burst() -> tuple[list[dict], list[str]]:
    """``CONCURRENT_REQUESTS`` requests of distinct texts, every fifth holding a list of three,
    and all those texts in order."""
    texts = iter(distinct_texts(CONCURRENT_REQUESTS + 2 * len(range(0, CONCURRENT_REQUESTS, 5))))
    parts = [[next(texts) for _ in range(3 if i % 5 == 0 else 1)] for i in range(CONCURRENT_REQUESTS)]
    items = [{"type": "text", "text": part if len(part) > 1 else part[0]} for part in parts]
    return items, [text for part in parts for text in part]


def rows_of(responses: list[httpx.Response]) -> np.ndarray:
    return np.concatenate([np.atleast_2d(vectors_of(response)) for response in responses])


def test_300_concurrent_text_requests_get_their_own_vectors_from_coalesced_calls(server):
    items, texts = text_burst()
    alone = one_at_a_time(server, [{"type": "text", "text": text} for text in texts])
    before = coalesced(server, "text")
    responses = burst(server, items)
    sent, merged_calls = coalesced(server, "text") - before

    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == CONCURRENT_REQUESTS, {code: statuses.count(code) for code in set(statuses)}
    assert_each_row_is_its_own_inputs(rows_of(responses), alone)
    assert sent == len(texts) and merged_calls > 0
    assert_the_encoder_batcher_never_merged(server, "encode_text")
    assert httpx.get(f"{server}/health").status_code == 200


def image_burst_items() -> tuple[list[dict], list[dict]]:
    """``IMAGE_BURST`` requests of distinct random images, every fourth holding three as video
    frames, and a single-image item for each of those images, in the same order."""
    items: list[dict] = []
    singles: list[dict] = []
    for index in range(IMAGE_BURST):
        frames = [{"type": "image_base64", "image_base64": b64(encoded(random_image(64, 48, seed=len(singles) + k)))}
                  for k in range(3 if index % 4 == 0 else 1)]
        singles.extend(frames)
        items.append(frames[0] if len(frames) == 1 else {"type": "video_frames", "video_frames": frames})
    return items, singles


def test_concurrent_image_requests_get_their_own_vectors_from_coalesced_calls(server):
    items, singles = image_burst_items()
    alone = one_at_a_time(server, singles)
    before = coalesced(server, "image")
    responses = burst(server, items)
    sent, merged_calls = coalesced(server, "image") - before

    assert_each_row_is_its_own_inputs(rows_of(responses), alone)
    assert sent == len(singles) and merged_calls > 0
    assert_the_encoder_batcher_never_merged(server, "encode_images")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"BENTOML_HOME": "{empty}"}, "python -m models import CLIP/clip-vit-b-32"),
        ({"EMBEDDING_SERVER_PORT": "eighty"}, "EMBEDDING_SERVER_PORT"),
        ({"EMBEDDING_DEVICE": "TPU"}, "EMBEDDING_DEVICE"),
        ({"EMBEDDING_MODEL_NAME": "CLIP/no-such-model"}, "Unknown model"),
        ({"EMBEDDING_USE_OV": "true", "EMBEDDING_DEVICE": "GPU.3"}, "GPU.3 is not available to OpenVINO"),
    ],
    ids=["model-not-imported", "bad-port", "bad-device", "unknown-model", "openvino-device-missing"],
)
def test_start_up_fails_with_a_clear_message(tiny_entry, tmp_path, overrides, expected):
    env = {**os.environ, "EMBEDDING_MODEL_NAME": MODEL, "EMBEDDING_SERVER_PORT": str(free_port())}
    env.update({key: value.replace("{empty}", str(tmp_path)) for key, value in overrides.items()})
    process = subprocess.Popen(serve_command(), cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        stop(process)
    assert process.returncode != 0
    assert expected in output.decode(errors="replace")


def test_bentoml_build_records_the_model(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "EMBEDDING_MODEL_NAME": MODEL}
    imported = subprocess.run([sys.executable, "-m", "models", "import", MODEL, "--random-weights", "--tiny"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    built = subprocess.run([sys.executable, "-m", "bentoml", "build"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    bento_files = list((tmp_path / "bentos").glob("multimodal-embedding-server/*/bento.yaml"))
    assert len(bento_files) == 1
    manifest = bento_files[0].read_text()
    assert re.search(r"tag: clip-vit-b-32:\w+", manifest)
    source = bento_files[0].parent / "src"
    assert (source / "service.py").is_file()
    assert not (source / "tests").exists()
    # The bento's own copy of the code is complete: its service module imports from there alone.
    imports = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, '.'); import service; "
                              "print(service.__file__)"], cwd=source, env=env, capture_output=True, text=True,
                             timeout=120)
    assert imports.returncode == 0, imports.stderr[-3000:]
    assert Path(imports.stdout.strip()).parent == source
