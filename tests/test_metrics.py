"""The server's Prometheus metrics (README, "Metrics"): what each request, embedded item, URL
download, decode and coalescer wait adds, in-process (prometheus_client's default registry)
and on a served ``/metrics`` (BentoML's multiprocess page); and the Grafana dashboard charts
only metrics the server exports, and every one of them.

The registry and the served page are shared with other tests, so every check compares the
values before and after its own requests."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from embedding_server.encoder import metrics as encoder_metrics
from embedding_server.encoder.coalescing import Coalescer
from embedding_server.http_api import metrics as entry_metrics
from embedding_server.http_api.errors import ApiError
from embedding_server.http_api.request_timeout import RequestTimeoutMiddleware
from embedding_server.media.remote import fetch_url
from embedding_server.settings import Settings
from helpers import SERVED_API_KEY, TEST_MODEL_ID, embedding_body
from local_http import serve_held, serve_routes
from prometheus_text import samples
from samples import b64, encoded, random_image
from video_samples import index_video

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "embedding-server.json"
# BentoML's own series (bentoml/_internal/server/http/instruments.py, _bentoml_impl/server/app.py).
BENTOML_SERIES = {
    "bentoml_service_request_total", "bentoml_service_request_in_progress",
    "bentoml_service_last_request_timestamp_seconds",
    *(f"{histogram}_{suffix}" for histogram in ("bentoml_service_request_duration_seconds",
                                                "bentoml_service_adaptive_batch_size")
      for suffix in ("bucket", "sum", "count")),
}
AUTH = {"Authorization": f"Bearer {SERVED_API_KEY}"}
PNG = encoded(random_image(64, 48))
Series = tuple[str, dict[str, str]]  # a sample name and labels it must have (summed over the rest)


def total(page: str, name: str, **labels: str) -> float:
    return sum(sample.value for sample in samples(page, name, **labels))


def in_process() -> str:
    return generate_latest(REGISTRY).decode()


@contextmanager
def changes(page: Callable[[], str], series: dict[str, Series]) -> Iterator[dict[str, float]]:
    """``with changes(page, series) as delta:``: once the block ends, ``delta`` holds how much
    each named series of ``page()`` grew during it."""
    before = page()
    delta: dict[str, float] = {}
    yield delta
    after = page()
    delta.update({key: total(after, name, **labels) - total(before, name, **labels)
                  for key, (name, labels) in series.items()})


def request(route: str, input_type: str, status: int) -> Series:
    return "embedding_requests_total", {"route": route, "input_type": input_type, "status": str(status)}


def items(modality: str) -> Series:
    return "embedding_items_embedded_total", {"modality": modality}


def observations(histogram: str, **labels: str) -> Series:
    return f"{histogram}_count", labels


def text_item(text: str | list[str]) -> dict:
    return {"type": "text", "text": text}


def image_item(data: bytes) -> dict:
    return {"type": "image_base64", "image_base64": b64(data)}


def test_documented_requests_are_counted_with_their_items_status_and_timings(api_client):
    series = {
        "texts ok": request("/embeddings", "text", 200), "wrong model": request("/embeddings", "text", 400),
        "image ok": request("/embeddings", "image_base64", 200),
        "bad base64": request("/embeddings", "image_base64", 422),
        "texts": items("text"), "images": items("image"),
        "decoded": observations("embedding_decode_seconds", media="image"),
        "prepared": observations("embedding_preprocess_seconds"),
        "text waits": observations("embedding_queue_wait_seconds", modality="text"),
        "image waits": observations("embedding_queue_wait_seconds", modality="image"),
        "texts sent": ("embedding_coalesced_items_sum", {"modality": "text"}),
    }
    with changes(in_process, series) as delta:
        assert api_client.post("/embeddings", json=embedding_body(text_item(["a", "b", "c"]))).status_code == 200
        assert api_client.post("/embeddings", json=embedding_body(text_item("a"), model="nope")).status_code == 400
        assert api_client.post("/embeddings", json=embedding_body(image_item(PNG))).status_code == 200
        bad = embedding_body({"type": "image_base64", "image_base64": "!!!"})
        assert api_client.post("/embeddings", json=bad).status_code == 422
    assert delta == {"texts ok": 1, "wrong model": 1, "image ok": 1, "bad base64": 1, "texts": 3, "images": 1,
                     "decoded": 1, "prepared": 1, "text waits": 1, "image waits": 1, "texts sent": 3}


def test_openai_and_rank_requests_are_counted_with_the_status_they_are_answered(api_client):
    series = {"openai text": request("/v1/embeddings", "text", 200),
              "openai wrong model": request("/v1/embeddings", "image", 404),  # OpenAI's status, not 400
              "rank": request("/rank", "text", 200), "texts": items("text")}
    with changes(in_process, series) as delta:
        assert api_client.post("/v1/embeddings", json={"model": TEST_MODEL_ID, "input": ["a", "b"]}).status_code == 200
        wrong = {"model": "nope", "input": "http://127.0.0.1/x.png", "modality": "image"}
        assert api_client.post("/v1/embeddings", json=wrong).status_code == 404
        ranked = {"model": TEST_MODEL_ID, "query": {"type": "text", "text": "q"}, "candidates": ["x", "y"]}
        assert api_client.post("/rank", json=ranked).status_code == 200
    assert delta == {"openai text": 1, "openai wrong model": 1, "rank": 1, "texts": 5}


def test_a_request_cut_by_the_request_timeout_is_counted_504():
    """The time-out cancels the route's work: the request is counted with the 504 it is
    answered (a client that disconnects cancels nothing: its request is counted as answered)."""
    async def route(scope, receive, send) -> None:
        with entry_metrics.counted_request("/embeddings", "video_url"):
            await asyncio.sleep(60)

    async def scenario() -> httpx.Response:
        app = RequestTimeoutMiddleware(route, timeout=0.05)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/embeddings", json={})

    with changes(in_process, {"timed out": request("/embeddings", "video_url", 504),
                              "all": ("embedding_requests_total", {"input_type": "video_url"})}) as delta:
        assert asyncio.run(scenario()).status_code == 504
    assert delta == {"timed out": 1, "all": 1}


def test_a_video_counts_its_frames_and_its_decoding_wait(api_client, tmp_path):
    video = index_video(tmp_path / "clip.mp4", frames=10, fps=10).read_bytes()
    series = {"ok": request("/embeddings/frames", "video_base64", 200), "frames": items("video_frame"),
              "decoded": observations("embedding_decode_seconds", media="video")}
    item = {"type": "video_base64", "video_base64": b64(video), "segment_config": {"num_frames": 3}}
    with changes(in_process, series) as delta:
        assert api_client.post("/embeddings/frames", json=embedding_body(item)).status_code == 200
    assert delta == {"ok": 1, "frames": 3, "decoded": 1}


def test_a_downloaded_image_counts_its_bytes_and_time(api_client):
    series = {"ok": request("/embeddings", "image_url", 200), "bytes": ("embedding_media_fetched_bytes_total",
                                                                       {"media": "image"}),
              "fetches": observations("embedding_media_fetch_seconds", media="image"),
              "failures": ("embedding_media_fetch_failures_total", {})}
    with serve_routes({"/a.png": (200, PNG, "image/png")}) as base, changes(in_process, series) as delta:
        assert api_client.post("/embeddings", json=embedding_body(
            {"type": "image_url", "image_url": f"{base}/a.png"})).status_code == 200
    assert delta == {"ok": 1, "bytes": len(PNG), "fetches": 1, "failures": 0}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("reason", "status"), [
    ("invalid_url", 422), ("policy", 400), ("http_status", 422), ("too_large", 413), ("connection", 422),
    ("timeout", 408),
])
def test_each_failed_download_is_counted_once_by_its_reason(reason, status):
    settings = Settings(url_allowed_hosts=("127.0.0.1",), url_read_timeout_s=0.2)
    routes = {"/big.png": (200, PNG, "image/png")}
    series = {"reason": ("embedding_media_fetch_failures_total", {"media": "image", "reason": reason}),
              "all": ("embedding_media_fetch_failures_total", {})}
    with serve_routes(routes) as base, serve_held((200, PNG, "image/png")) as held:
        url = {"invalid_url": "ftp://127.0.0.1/a.png", "policy": "http://10.1.2.3/a.png",
               "http_status": f"{base}/missing.png", "too_large": f"{base}/big.png",
               "connection": f"http://127.0.0.1:{closed_port()}/a.png", "timeout": f"{held.url}/a.png"}[reason]
        with changes(in_process, series) as delta, pytest.raises(ApiError) as raised:
            asyncio.run(fetch_url(url, max_bytes=len(PNG) - 1, settings=settings))
    assert raised.value.status_code == status
    assert delta == {"reason": 1, "all": 1}


def test_the_coalescer_observes_how_long_each_request_waited_for_its_call():
    async def scenario() -> list[float]:
        now = [0.0]
        started, gate = asyncio.Event(), asyncio.Event()
        waits: list[float] = []

        async def encode(texts: list[str]) -> np.ndarray:
            started.set()
            await gate.wait()
            return np.zeros((len(texts), 1), dtype=np.float32)

        coalescer = Coalescer(encode, lambda parts: [text for part in parts for text in part], 8, 60,
                              clock=lambda: now[0], observe_wait=waits.append)
        first = asyncio.ensure_future(coalescer(["a"], 1))
        await started.wait()  # the first call is in flight
        queued = []
        for arrival in (1.0, 2.0):
            now[0] = arrival
            queued.append(asyncio.ensure_future(coalescer(["b"], 1)))
            await asyncio.sleep(0)
        now[0] = 5.0
        gate.set()
        await asyncio.gather(first, *queued)
        return waits

    assert asyncio.run(scenario()) == [0.0, 4.0, 3.0]


def promql_metrics(expression: str) -> set[str]:
    """The metric names ``expression`` reads: what is left once strings, label matchers, ranges,
    grouping clauses, variables, numbers, keywords and function names are taken out."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expression)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", "", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", bare))
    return names - {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert all(panel["datasource"]["uid"] == "${DS_PROMETHEUS}" for panel in panels)
    return [target["expr"] for panel in panels for target in panel["targets"]]


def server_series() -> dict[str, set[str]]:
    """Each metric the server defines, with the sample names it is exported under."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    defined = [metric for module in (entry_metrics, encoder_metrics) for metric in vars(module).values()
               if isinstance(metric, MetricWrapperBase)]
    return {family.name: {family.name + suffix for suffix in suffixes[family.type]}
            for metric in defined for family in metric.describe()}


def test_the_promql_parser_finds_only_metric_names():
    expression = ('sum by (le, endpoint) (rate(x_bucket{a="1", b=~"{[("}[$__rate_interval])) '
                  '/ on (endpoint) group_left sum(y_total offset 5m) > 0')
    assert promql_metrics(expression) == {"x_bucket", "y_total"}


def test_the_dashboard_charts_only_exported_metrics_and_every_one_of_ours():
    used = set().union(*map(promql_metrics, dashboard_expressions()))
    ours = server_series()
    assert used <= set().union(*ours.values()) | BENTOML_SERIES
    assert all(names & used for names in ours.values()), sorted(name for name, names in ours.items()
                                                                 if not names & used)


def test_metric_names_carry_the_prefix_and_their_unit():
    for name in server_series():
        assert name.startswith("embedding_"), name
        assert name.endswith(("_seconds", "_bytes", "_items")) or name in {
            "embedding_requests", "embedding_items_embedded", "embedding_media_fetch_failures"}, name


@pytest.mark.e2e
def test_served_metrics_count_each_kind_of_request(keyed_server, tmp_path):
    url = keyed_server.url
    shutil.copy(index_video(tmp_path / "metrics.mp4", frames=20, fps=10), keyed_server.video_root / "metrics.mp4")

    def page() -> str:  # BentoML's route: the API keys do not cover it
        response = httpx.get(f"{url}/metrics", timeout=30)
        assert response.status_code == 200
        return response.text

    def post(item: dict) -> int:
        return httpx.post(f"{url}/embeddings", json=embedding_body(item), headers=AUTH, timeout=120).status_code

    fetched = ("embedding_media_fetched_bytes_total", {"media": "image"})
    series = {
        "texts ok": request("/embeddings", "text", 200), "base64 ok": request("/embeddings", "image_base64", 200),
        "url ok": request("/embeddings", "image_url", 200), "url failed": request("/embeddings", "image_url", 422),
        "video ok": request("/embeddings", "video_file", 200),
        "texts": items("text"), "images": items("image"), "frames": items("video_frame"),
        "fetched": fetched, "fetches": observations("embedding_media_fetch_seconds", media="image"),
        "http_status": ("embedding_media_fetch_failures_total", {"media": "image", "reason": "http_status"}),
        "image decodes": observations("embedding_decode_seconds", media="image"),
        "video decodes": observations("embedding_decode_seconds", media="video"),
        "prepared": observations("embedding_preprocess_seconds"),
        "text waits": observations("embedding_queue_wait_seconds", modality="text"),
        "entry requests": ("bentoml_service_request_total", {"endpoint": "/embeddings", "http_response_code": "200"}),
    }
    with serve_routes({"/a.png": (200, PNG, "image/png")}) as media, changes(page, series) as delta:
        assert post(text_item(["one", "two"])) == 200
        assert post(image_item(PNG)) == 200
        assert post({"type": "image_url", "image_url": f"{media}/a.png"}) == 200
        assert post({"type": "image_url", "image_url": f"{media}/missing.png"}) == 422
        assert post({"type": "video_file", "video_path": "metrics.mp4", "segment_config": {"num_frames": 3}}) == 200
    assert delta == {"texts ok": 1, "base64 ok": 1, "url ok": 1, "url failed": 1, "video ok": 1,
                     "texts": 2, "images": 2, "frames": 3, "fetched": len(PNG), "fetches": 2, "http_status": 1,
                     "image decodes": 2, "video decodes": 1, "prepared": 2, "text waits": 1, "entry requests": 4}
    served = set(re.findall(r"^[a-zA-Z_:][a-zA-Z0-9_:]*", page(), re.MULTILINE))  # every sample line
    used = set().union(*map(promql_metrics, dashboard_expressions()))
    assert used <= served, sorted(used - served)
