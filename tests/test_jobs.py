"""``POST /embeddings`` as a background job (``/jobs/embeddings/...``, README "Background
jobs"): the served tiny CLIP's jobs answer what the synchronous route answers, vectors and
errors; submit refuses bad bodies, missing keys and oversized bodies as the route does; cancel
stops a running job and leaves its row canceled."""

from __future__ import annotations

import asyncio
import base64
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _bentoml_impl.tasks import Sqlite3Store

from embedding_server import jobs
from embedding_server.http_api.api_keys import MISSING_KEY
from helpers import SERVED_API_KEY
from helpers import TEST_MODEL_ID as MODEL
from serving import poll
from video_samples import index_video

AUTH = {"Authorization": f"Bearer {SERVED_API_KEY}"}
CLOSE = {"rtol": 0, "atol": 2e-6}
JOB_TIMEOUT_S = 120


def body(item: dict[str, Any], encoding_format: str = "float") -> dict[str, Any]:
    return {"model": MODEL, "input": item, "encoding_format": encoding_format}


def submitted(url: str, payload: dict[str, Any]) -> str:
    response = httpx.post(f"{url}{jobs.SUBMIT}", json=payload, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "in_progress"
    return response.json()["task_id"]


def ended(url: str, task_id: str) -> str:
    """The job's status once it is no longer in progress (bounded polling)."""
    seen: dict[str, str] = {}

    def done() -> bool:
        response = httpx.get(f"{url}{jobs.JOB_ROUTE}/status", params={"task_id": task_id}, headers=AUTH)
        assert response.status_code == 200, response.text
        seen["status"] = response.json()["status"]
        return seen["status"] != "in_progress"

    assert poll(done, JOB_TIMEOUT_S, interval_s=0.1), f"job {task_id} still in progress"
    return seen["status"]


def result(url: str, task_id: str) -> httpx.Response:
    return httpx.get(f"{url}{jobs.JOB_ROUTE}/get", params={"task_id": task_id}, headers=AUTH, timeout=30)


def synchronous(url: str, payload: dict[str, Any] | bytes) -> httpx.Response:
    if isinstance(payload, bytes):
        return httpx.post(f"{url}/embeddings", content=payload, headers=AUTH, timeout=120)
    return httpx.post(f"{url}/embeddings", json=payload, headers=AUTH, timeout=120)


@pytest.fixture(scope="module")
def video(keyed_server, tmp_path_factory) -> Path:
    """A 3 s, 10 fps video, also in the server's video root."""
    path = index_video(tmp_path_factory.mktemp("job-video") / "job.mp4", frames=30, fps=10)
    shutil.copy(path, keyed_server.video_root / "job.mp4")
    return path


@pytest.mark.e2e
@pytest.mark.parametrize("source", ["video_file", "video_base64"])
def test_a_video_job_answers_the_synchronous_vectors(keyed_server, video, source):
    item = ({"type": "video_file", "video_path": "job.mp4"} if source == "video_file" else
            {"type": "video_base64", "video_base64": base64.b64encode(video.read_bytes()).decode()})
    item["segment_config"] = {"num_frames": 4}
    payload = body(item)
    task_id = submitted(keyed_server.url, payload)
    assert ended(keyed_server.url, task_id) == "completed"
    answer = result(keyed_server.url, task_id)
    expected = synchronous(keyed_server.url, payload)
    assert answer.status_code == expected.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    vectors = np.array(answer.json()["embedding"], dtype=np.float32)
    assert vectors.shape[0] == 4
    np.testing.assert_allclose(vectors, np.array(expected.json()["embedding"], dtype=np.float32), **CLOSE)


@pytest.mark.e2e
def test_a_job_for_a_missing_file_fails_with_the_routes_404(keyed_server):
    payload = body({"type": "video_file", "video_path": "no-such-video.mp4"})
    task_id = submitted(keyed_server.url, payload)
    assert ended(keyed_server.url, task_id) == "failed"
    answer, expected = result(keyed_server.url, task_id), synchronous(keyed_server.url, payload)
    assert answer.status_code == expected.status_code == 404
    assert answer.json() == expected.json()
    assert answer.json()["detail"].startswith("File not found: ")


@pytest.mark.e2e
@pytest.mark.parametrize("payload", [
    b"{not json",
    b"",
    b'{"model": "x"}',
    body({"type": "audio", "audio": "x"}),
    body({"type": "text", "text": "a cat", "colour": "red"}),
    body({"type": "text", "text": "a cat"}, encoding_format="float16"),
    {**body({"type": "text", "text": "a cat"}), "model": "CLIP/not-this-one"},
], ids=["malformed", "empty", "missing-fields", "unknown-type", "unknown-key", "bad-format", "wrong-model"])
def test_submit_refuses_a_bad_body_as_the_route_does(keyed_server, payload):
    if isinstance(payload, bytes):
        refused = httpx.post(f"{keyed_server.url}{jobs.SUBMIT}", content=payload, headers=AUTH)
    else:
        refused = httpx.post(f"{keyed_server.url}{jobs.SUBMIT}", json=payload, headers=AUTH)
    expected = synchronous(keyed_server.url, payload)
    assert refused.status_code == expected.status_code and refused.status_code in (400, 422)
    assert refused.json() == expected.json()


@pytest.mark.e2e
@pytest.mark.parametrize("method, route", [
    ("POST", "submit"), ("GET", "status"), ("GET", "get"), ("POST", "retry"), ("PUT", "cancel"), ("POST", ""),
])
def test_every_job_route_needs_the_api_key(keyed_server, method, route):
    path = f"{jobs.JOB_ROUTE}/{route}".rstrip("/")
    refused = httpx.request(method, f"{keyed_server.url}{path}", params={"task_id": "0" * 32},
                            json=body({"type": "text", "text": "a cat"}))
    assert refused.status_code == 401
    assert refused.json() == {"detail": MISSING_KEY}
    assert refused.headers["www-authenticate"] == "Bearer"


@pytest.mark.e2e
def test_submit_refuses_a_body_over_the_cap(keyed_server):
    oversized = b"x" * (32 * 1024 * 1024 + 1)  # EMBEDDING_MAX_BODY_BYTES' default
    refused = httpx.post(f"{keyed_server.url}{jobs.SUBMIT}", content=oversized, headers=AUTH, timeout=60)
    assert refused.status_code == 413
    assert refused.json()["detail"].startswith("Request body too large")


@pytest.mark.e2e
def test_a_text_job_completes_and_keeps_no_key_in_the_result_store(keyed_server):
    payload = body({"type": "text", "text": ["a cat", "a dog"]}, encoding_format="base64")
    task_id = submitted(keyed_server.url, payload)
    assert ended(keyed_server.url, task_id) == "completed"
    assert result(keyed_server.url, task_id).json() == synchronous(keyed_server.url, payload).json()
    store = Path(jobs.BentoMLContainer.result_store_file.get())
    with sqlite3.connect(store) as db:
        stored = db.execute("SELECT input FROM result WHERE task_id = ?", (task_id,)).fetchone()
    assert stored is not None and SERVED_API_KEY.encode() not in stored[0]


@pytest.mark.e2e
def test_cancel_answers_for_unknown_and_ended_jobs(keyed_server):
    url = f"{keyed_server.url}{jobs.CANCEL}"
    unknown = httpx.put(url, params={"task_id": "f" * 32}, headers=AUTH)
    assert unknown.status_code == 404 and unknown.json() == {"detail": f"Job not found: {'f' * 32}"}
    assert httpx.put(url, headers=AUTH).status_code == 400
    task_id = submitted(keyed_server.url, body({"type": "text", "text": "a cat"}))
    assert ended(keyed_server.url, task_id) == "completed"
    late = httpx.put(url, params={"task_id": task_id}, headers=AUTH)
    assert late.status_code == 409 and late.json()["detail"].endswith("has already ended: completed")
    assert result(keyed_server.url, task_id).status_code == 200


@pytest.mark.e2e
def test_the_synchronous_task_route_is_not_served(keyed_server):
    answer = httpx.post(f"{keyed_server.url}{jobs.JOB_ROUTE}", json=body({"type": "text", "text": "a"}),
                        headers=AUTH)
    assert answer.status_code == 404


# --- cancellation, in-process: a job whose embedding never ends ---

class StalledPipeline:
    """A pipeline whose ``embed`` waits until cancelled, recording that it was."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def embed(self, request: Any) -> Any:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def test_cancel_stops_a_running_job_and_leaves_it_canceled(tmp_path, monkeypatch):
    path = str(tmp_path / "task_result.db")
    Sqlite3Store.init_db(path)
    store = jobs.JobStore(path)
    monkeypatch.setattr(jobs, "job_store", lambda: store)
    task_id = "a" * 32
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO result (task_id, name, input, status) VALUES (?, 'embeddings_job', x'', ?)",
                   (task_id, jobs.IN_PROGRESS))
    pipeline = StalledPipeline()

    async def scenario() -> None:
        job = asyncio.ensure_future(jobs.answer(pipeline, body({"type": "text", "text": "a cat"}), task_id))
        await asyncio.wait_for(pipeline.started.wait(), 10)
        assert await store.cancel(task_id)
        with pytest.raises(jobs.JobCancelled):
            await asyncio.wait_for(job, 10)
        assert not await store.cancel(task_id)  # already canceled
        assert await store.status(task_id) == jobs.CANCELED

    asyncio.run(scenario())
    assert pipeline.cancelled
