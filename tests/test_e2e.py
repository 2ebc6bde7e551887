"""End to end: a real ``bentoml serve`` subprocess (entry service + batching Encoder) over HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import decord
import httpx
import numpy as np
import pytest
from PIL import Image

from local_http import serve_routes
from samples import b64, encoded, random_image, reference_images, reference_text, unit_cosines
from serving import REPO, free_port, serve_command, served, stop
from video_samples import index_video

pytestmark = pytest.mark.e2e
MODEL = "CLIP/clip-vit-b-32"
CONCURRENT_REQUESTS = 300


@pytest.fixture(scope="module")
def server(tiny_entry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with served({**os.environ, "EMBEDDING_MODEL_NAME": MODEL}, log) as (url, _):
        yield url


def post(url: str, item: dict, model: str = MODEL) -> httpx.Response:
    return httpx.post(f"{url}/embeddings", json={"model": model, "input": item, "encoding_format": "float"},
                      timeout=60)


def test_status_routes(server):
    assert httpx.get(f"{server}/health").json() == {"status": "healthy"}
    models = httpx.get(f"{server}/models").json()
    assert models["total_models"] == 19 and models["current_model"] == MODEL
    current = httpx.get(f"{server}/model/current").json()
    assert (current["model"], current["device"], current["use_openvino"]) == (MODEL, "CPU", False)
    assert current["weights"] == "random"
    assert httpx.get(f"{server}/model/capabilities").json()["supports_image"] is True


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


def batch_sizes_above_one(metrics: str, method: str) -> float:
    """Observations of the adaptive batch size histogram larger than 1, for ``method``."""
    def value(suffix: str, extra: str = "") -> float:
        pattern = (rf'^bentoml_service_adaptive_batch_size_{suffix}\{{[^}}]*method_name="{method}"'
                   rf'[^}}]*{extra}[^}}]*\}} ([0-9.e+]+)$')
        return sum(float(found) for found in re.findall(pattern, metrics, flags=re.M))

    return value("count") - value("bucket", r'le="1\.0"')


def test_300_concurrent_requests_all_succeed_and_are_batched(server):
    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=CONCURRENT_REQUESTS)
        async with httpx.AsyncClient(base_url=server, limits=limits, timeout=120) as client:
            async def one(index: int) -> int:
                body = {"model": MODEL, "input": {"type": "text", "text": f"caption number {index}"},
                        "encoding_format": "float"}
                return (await client.post("/embeddings", json=body)).status_code

            return await asyncio.gather(*(one(i) for i in range(CONCURRENT_REQUESTS)))

    statuses = asyncio.run(burst())
    assert statuses.count(200) == CONCURRENT_REQUESTS, {code: statuses.count(code) for code in set(statuses)}
    metrics = httpx.get(f"{server}/metrics").text
    assert batch_sizes_above_one(metrics, "encode_text") > 0
    assert httpx.get(f"{server}/health").status_code == 200


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
    assert (bento_files[0].parent / "src" / "service.py").is_file()
    assert not (bento_files[0].parent / "src" / "tests").exists()
