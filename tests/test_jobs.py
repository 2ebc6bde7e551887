"""``POST /embeddings`` as a background job (``/jobs/embeddings/...``, README "Background
jobs"): the served tiny CLIP's jobs answer what the synchronous route answers, vectors and
errors; submit refuses bad bodies, missing keys and oversized bodies as the route does; cancel
stops a running job and ends its row canceled (for ``get`` and BentoML's clean-up), and wins or
loses the race with the work's end cleanly; jobs are counted once, limited by
EMBEDDING_MAX_JOBS, keep no validated copy of their body, and answer browsers with the app's
CORS headers."""

from __future__ import annotations

import asyncio
import base64
import datetime
import gc
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable

import httpx
import numpy as np
import orjson
import pytest
from _bentoml_impl.tasks import ResultStatus, Sqlite3Store
from prometheus_client import REGISTRY
from pydantic import ValidationError
from starlette.responses import Response

from embedding_server import jobs
from embedding_server.http_api.api_keys import MISSING_KEY
from embedding_server.http_api.body_limit import Receive, Scope, Send
from embedding_server.http_api.cors import EXPOSED_HEADERS
from embedding_server.http_api.errors import ApiError
from embedding_server.http_api.schemas import EmbeddingRequest
from embedding_server.settings import Settings
from helpers import SERVED_API_KEY, SERVED_ORIGIN
from helpers import TEST_MODEL_ID as MODEL
from prometheus_text import samples
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
def test_a_text_job_completes_is_counted_and_keeps_no_key_in_the_result_store(keyed_server):
    def jobs_counted() -> float:  # BentoML's /metrics: the API keys do not cover it
        page = httpx.get(f"{keyed_server.url}/metrics", timeout=30).text
        return sum(sample.value for sample in samples(page, "embedding_requests_total", route=jobs.JOB_ROUTE,
                                                      input_type="text", status="200"))

    counted = jobs_counted()
    payload = body({"type": "text", "text": ["a cat", "a dog"]}, encoding_format="base64")
    task_id = submitted(keyed_server.url, payload)
    assert ended(keyed_server.url, task_id) == "completed"
    assert poll(lambda: jobs_counted() == counted + 1, 10, interval_s=0.1)  # once, as it ended
    assert result(keyed_server.url, task_id).json() == synchronous(keyed_server.url, payload).json()
    with sqlite3.connect(keyed_server.result_store) as db:
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


# --- in-process: the job's row, its metrics, the limit, CORS ---

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


class EndingPipeline:
    """A pipeline whose ``embed`` runs ``before`` and answers 404, recording its request."""

    def __init__(self, before: Callable[[], Awaitable[None]] | None = None) -> None:
        self.before = before
        self.request: Any = None

    async def embed(self, request: Any) -> Any:
        self.request = request
        if self.before is not None:
            await self.before()
        raise ApiError(404, "File not found: gone.mp4")


TASK_ID = "a" * 32
STORED_INPUT = b'{"scope": {"type": "http", "headers": []}, "content": ""}'  # a request as BentoML stores it
TEXT_JOB = body({"type": "text", "text": "a cat"})


@pytest.fixture
def store(tmp_path, monkeypatch) -> jobs.JobStore:
    """A result store of BentoML's schema with the row of an in-progress job :data:`TASK_ID`."""
    path = str(tmp_path / "task_result.db")
    Sqlite3Store.init_db(path)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO result (task_id, name, input, status) VALUES (?, 'embeddings_job', ?, ?)",
                   (TASK_ID, STORED_INPUT, jobs.IN_PROGRESS))
    store = jobs.JobStore(path)
    monkeypatch.setattr(jobs, "job_store", lambda: store)
    return store


async def bentoml_row(store: jobs.JobStore, task_id: str = TASK_ID) -> Any:
    """The row as BentoML's ``get`` (and ``retry``) read it: raises RuntimeError while it has no
    ``completed_at``."""
    async with Sqlite3Store(store.path) as bentoml_store:
        return await bentoml_store.get(task_id)


def job_count(input_type: str, status: int) -> float:
    return REGISTRY.get_sample_value("embedding_requests_total", {
        "route": jobs.JOB_ROUTE, "input_type": input_type, "status": str(status)}) or 0.0


def canceled_answer(row: Any) -> tuple[int, Any]:
    return row.result.status_code, orjson.loads(row.result.body)


def test_cancel_stops_a_running_job_and_ends_its_row_for_get_and_clean_up(store):
    pipeline = StalledPipeline()
    counted = job_count("text", jobs.CANCELED_STATUS)

    async def scenario() -> Any:
        job = asyncio.ensure_future(jobs.answer(pipeline, TEXT_JOB, TASK_ID))
        await asyncio.wait_for(pipeline.started.wait(), 10)
        assert await store.cancel(TASK_ID)
        with pytest.raises(jobs.JobCancelled):
            await asyncio.wait_for(job, 10)
        assert not await store.cancel(TASK_ID)  # already ended
        return await bentoml_row(store)

    row = asyncio.run(scenario())
    assert pipeline.cancelled
    assert row.status.value == jobs.CANCELED and row.completed_at is not None
    assert canceled_answer(row) == (409, {"detail": f"Job {TASK_ID} was canceled"})
    assert job_count("text", jobs.CANCELED_STATUS) == counted + 1


def test_bentoml_deletes_a_canceled_row_a_day_after_it_ended(store):
    async def scenario() -> None:
        assert await store.cancel(TASK_ID)
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE result SET completed_at = ? WHERE task_id = ?",
                       (datetime.datetime.now(tz=datetime.timezone.utc) - datetime.timedelta(hours=25), TASK_ID))
            db.execute("INSERT INTO result (task_id, name, input, status) VALUES ('b', 'embeddings_job', x'', ?)",
                       (jobs.IN_PROGRESS,))
        async with Sqlite3Store(store.path) as bentoml_store:  # any job's end runs BentoML's clean-up
            await bentoml_store.set_result("b", Response(b"{}"), ResultStatus.COMPLETED)
        assert await store.status(TASK_ID) is None

    asyncio.run(scenario())


def test_a_cancel_after_the_work_ended_finds_the_job_ended(store):
    counted = job_count("text", 404)

    async def scenario() -> tuple[Any, Any]:
        response = await jobs.answer(EndingPipeline(), TEXT_JOB, TASK_ID)
        assert not await store.cancel(TASK_ID)  # the row was ended before BentoML's set_result
        return response, await bentoml_row(store)

    response, row = asyncio.run(scenario())
    assert response.status_code == 404
    assert row.status.value == jobs.FAILED and row.result.status_code == 404
    assert orjson.loads(row.result.body) == {"detail": "File not found: gone.mp4"}
    assert job_count("text", 404) == counted + 1


def test_a_cancel_before_the_work_ended_wins_over_the_answer(store):
    """The cancel lands after the work finished (before the job's next look at its row) but
    before the row was ended: the job raises, so BentoML never overwrites "canceled"."""
    async def cancel_first() -> None:
        assert await store.cancel(TASK_ID)

    counted = job_count("text", jobs.CANCELED_STATUS)

    async def scenario() -> Any:
        with pytest.raises(jobs.JobCancelled):
            await jobs.answer(EndingPipeline(cancel_first), TEXT_JOB, TASK_ID)
        return await bentoml_row(store)

    row = asyncio.run(scenario())
    assert row.status.value == jobs.CANCELED
    assert canceled_answer(row) == (409, {"detail": f"Job {TASK_ID} was canceled"})
    assert job_count("text", jobs.CANCELED_STATUS) == counted + 1


def test_the_job_shares_the_parsed_bodys_strings():
    """The job validates BentoML's parsed input without copying it (a base64 body is one
    string, as big as the body)."""
    item = {"type": "image_base64", "image_base64": "QUJD" * 4096}
    pipeline = EndingPipeline()
    asyncio.run(jobs.answer(pipeline, body(item), None))
    assert pipeline.request.input.image_base64 is item["image_base64"]


# --- JobRoutes around a stand-in for BentoML's task routes ---

ORIGIN = "https://app.example.com"
KEY = "job-test-key"


class TaskRoutes:
    """Answers every request 200 after reading its body; ``hold`` keeps submits and retries
    running (as a job runs inside its submit) until released."""

    def __init__(self, hold: bool = False, count_requests: bool = False) -> None:
        self.hold = hold
        self.count_requests = count_requests  # record the EmbeddingRequest objects alive
        self.running = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.requests_alive: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        if self.count_requests:
            self.requests_alive.append(requests_alive())
        if self.hold and scope["path"] in (jobs.SUBMIT, jobs.RETRY):
            self.running += 1
            self.started.set()
            await self.release.wait()
        await Response(b'{"status": "in_progress"}', media_type="application/json")(scope, receive, send)


def requests_alive() -> int:
    return sum(type(item) is EmbeddingRequest for item in gc.get_objects())


def routes(inner: TaskRoutes, **settings: Any) -> httpx.AsyncClient:
    guarded = jobs.JobRoutes(inner, Settings(**settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://test")


def test_max_jobs_is_the_servers_limit_split_across_entry_workers():
    assert Settings().max_jobs == 8
    assert jobs.JobRoutes(TaskRoutes(), Settings(max_jobs=3, entry_workers=2)).max_jobs == 2
    assert jobs.JobRoutes(TaskRoutes(), Settings(max_jobs=1, entry_workers=4)).max_jobs == 1
    with pytest.raises(ValidationError):
        Settings(max_jobs=0)


def test_jobs_beyond_max_jobs_are_refused_429_while_status_stays_answered():
    inner = TaskRoutes(hold=True)

    async def scenario() -> None:
        async with routes(inner, max_jobs=2, entry_workers=1) as client:
            running = [asyncio.ensure_future(client.post(f"{jobs.RETRY}?task_id={TASK_ID}")) for _ in range(2)]
            while inner.running < 2:
                await asyncio.wait_for(inner.started.wait(), 10)
                await asyncio.sleep(0.01)
            refused = await client.post(f"{jobs.RETRY}?task_id={TASK_ID}")
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["detail"].startswith("Too many requests")
            assert (await client.get(f"{jobs.JOB_ROUTE}/status?task_id={TASK_ID}")).status_code == 200
            inner.release.set()
            assert [answer.status_code for answer in await asyncio.gather(*running)] == [200, 200]
            assert (await client.post(f"{jobs.RETRY}?task_id={TASK_ID}")).status_code == 200

    asyncio.run(scenario())


def test_a_running_job_keeps_no_validated_copy_of_its_body(monkeypatch):
    monkeypatch.setattr(jobs.bentoml, "get_current_service",
                        lambda: SimpleNamespace(pipeline=SimpleNamespace(check_model=lambda model: None)))
    inner = TaskRoutes(count_requests=True)

    async def scenario() -> int:
        async with routes(inner) as client:
            answer = await client.post(jobs.SUBMIT, json=TEXT_JOB)
            assert answer.status_code == 200, answer.text
        return inner.requests_alive[0]

    gc.collect()
    before = requests_alive()
    assert asyncio.run(scenario()) == before


CORS_SETTINGS = {"api_keys": (KEY,), "cors_allow_origins": (ORIGIN,), "cors_allow_methods": ("GET", "POST", "PUT")}


def test_a_preflight_of_a_job_route_is_answered_without_a_key():
    async def scenario() -> httpx.Response:
        async with routes(TaskRoutes(), **CORS_SETTINGS) as client:
            return await client.options(jobs.CANCEL, headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization"})

    preflight = asyncio.run(scenario())
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-max-age"] == str(Settings().cors_max_age_s)


def test_job_answers_and_refusals_carry_the_apps_cors_headers():
    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with routes(TaskRoutes(), **CORS_SETTINGS) as client:
            status = f"{jobs.JOB_ROUTE}/status?task_id={TASK_ID}"
            keyed = await client.get(status, headers={"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"})
            unkeyed = await client.get(status, headers={"Origin": ORIGIN})
            elsewhere = await client.get(status, headers={"Origin": "https://other.example",
                                                          "Authorization": f"Bearer {KEY}"})
            return keyed, unkeyed, elsewhere

    keyed, unkeyed, elsewhere = asyncio.run(scenario())
    assert keyed.status_code == 200 and keyed.headers["access-control-allow-origin"] == ORIGIN
    assert unkeyed.status_code == 401 and unkeyed.headers["access-control-allow-origin"] == ORIGIN
    exposed = {name.strip().lower() for name in unkeyed.headers["access-control-expose-headers"].split(",")}
    assert exposed == {name.lower() for name in EXPOSED_HEADERS}
    assert "access-control-allow-origin" not in elsewhere.headers


def test_without_allowed_origins_job_routes_send_no_cors_headers():
    async def scenario() -> httpx.Response:
        async with routes(TaskRoutes()) as client:
            return await client.get(f"{jobs.JOB_ROUTE}/status?task_id={TASK_ID}", headers={"Origin": ORIGIN})

    answer = asyncio.run(scenario())
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


@pytest.mark.e2e
def test_served_job_routes_answer_browsers_of_the_allowed_origin(keyed_server):
    preflight = httpx.options(f"{keyed_server.url}{jobs.SUBMIT}", headers={
        "Origin": SERVED_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == SERVED_ORIGIN
    status = httpx.get(f"{keyed_server.url}{jobs.JOB_ROUTE}/status", params={"task_id": "f" * 32},
                       headers={**AUTH, "Origin": SERVED_ORIGIN})
    assert status.headers["access-control-allow-origin"] == SERVED_ORIGIN
