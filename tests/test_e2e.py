"""End to end: a real ``bentoml serve`` subprocess (entry service + batching Encoder) over HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from local_http import serve_routes
from samples import b64, encoded, random_image, reference_images, reference_text, unit_cosines

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
MODEL = "CLIP/clip-vit-b-32"
START_TIMEOUT_S = 180
CONCURRENT_REQUESTS = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command() -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "service:EmbeddingService", "--host", "127.0.0.1"]


def stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (arbiter and workers)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_until_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll ``/readyz`` (entry service and its Encoder) until it answers 200."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)  # polling interval of a bounded wait, not synchronisation
    raise AssertionError(f"server not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(tiny_entry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "EMBEDDING_SERVER_PORT": str(port), "EMBEDDING_MODEL_NAME": MODEL}
    with open(log, "wb") as output:
        process = subprocess.Popen(serve_command(), cwd=REPO, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        yield url
    finally:
        stop(process)


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
        ({"EMBEDDING_MODEL_NAME": "QwenText/qwen3-embedding-0.6b"}, "not implemented"),
    ],
    ids=["model-not-imported", "bad-port", "bad-device", "unknown-model", "family-not-implemented"],
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
