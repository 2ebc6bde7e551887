"""The Python client (``client/embedding_client``) against the in-process app and its tiny
CLIP: vectors equal the direct HTTP calls', order is kept across concurrent bulk requests,
429/503 are retried, refusals raise typed errors with the server's ``detail``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

import embedding_client as ec
from client_transports import AsyncRelay, Relay, Reversing, refusals
from helpers import TEST_MODEL_ID as MODEL
from helpers import embed, vectors_of
from samples import b64, distinct_images, encoded, random_image

TEXTS = [f"caption number {index}: a {animal}" for index, animal in
         enumerate(["cat", "dog", "heron", "bridge", "loaf", "river", "kite", "lamp", "owl", "fern"])]
FAST_RETRY = ec.RetryPolicy(attempts=4, initial_wait_s=0.0, max_wait_s=0.0)


def direct_texts(api_client, texts: list[str], batch_size: int | None = None) -> np.ndarray:
    """The documented route's vectors, asked in batches of ``batch_size`` as the client asks
    (a row's last bits depend on the batch it is computed in)."""
    size = batch_size or len(texts)
    return np.concatenate([np.atleast_2d(vectors_of(embed(api_client, {"type": "text", "text": texts[at:at + size]})))
                           for at in range(0, len(texts), size)])


def direct_image(api_client, data: bytes) -> np.ndarray:
    return vectors_of(embed(api_client, {"type": "image_base64", "image_base64": b64(data)}))


def sync_client(transport: httpx.BaseTransport, **options) -> ec.Client:
    return ec.Client(http=httpx.Client(transport=transport, base_url="http://testserver"),
                     **{"retry": FAST_RETRY, **options})


def async_client(transport: httpx.BaseTransport, **options) -> ec.AsyncClient:
    return ec.AsyncClient(http=httpx.AsyncClient(transport=AsyncRelay(transport), base_url="http://testserver"),
                          **{"retry": FAST_RETRY, **options})


@pytest.fixture
def relay(api_client) -> Relay:
    return Relay(api_client)


def test_texts_in_batches_equal_one_direct_call_and_name_the_model(api_client, relay):
    with sync_client(relay, batch_size=3, max_concurrency=2) as client:
        result = client.embed_texts(TEXTS)
    assert result.model == MODEL and result.vectors.dtype == np.float32
    assert result.vectors.shape == (len(TEXTS), result.dimension) and len(result) == len(TEXTS)
    np.testing.assert_array_equal(result.vectors, direct_texts(api_client, TEXTS, batch_size=3))
    bodies = [request for request in relay.requests if request.url.path == "/embeddings"]
    assert len(bodies) == 4  # 10 texts in batches of 3


def test_a_lone_string_is_one_text_not_its_characters(api_client, relay):
    with sync_client(relay) as client:
        result = client.embed_texts("a photo of a cat")
    np.testing.assert_array_equal(result.vectors, direct_texts(api_client, ["a photo of a cat"]))


def test_images_as_paths_bytes_pil_and_data_uris_equal_the_documented_route(api_client, relay, tmp_path):
    images = distinct_images()[:4]
    data = [encoded(image) for image in images]
    path = tmp_path / "photo.png"
    path.write_bytes(data[0])
    items = [path, str(path), data[1], images[2], f"data:image/png;base64,{b64(data[3])}"]
    with sync_client(relay, batch_size=2) as client:
        result = client.embed_images(items)
    expected = np.stack([direct_image(api_client, raw) for raw in [data[0], data[0], data[1], data[2], data[3]]])
    np.testing.assert_allclose(result.vectors, expected, atol=1e-6)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_concurrent_bulk_requests_answered_last_first_keep_the_input_order(api_client, relay, flavour):
    reversing = Reversing(relay, window=3)
    options = {"batch_size": 1, "max_concurrency": 3}
    texts = TEXTS[:6]
    if flavour == "sync":
        with sync_client(reversing, **options) as client:
            result = client.embed_texts(texts)
    else:
        async def run() -> ec.Embeddings:
            async with async_client(reversing, **options) as client:
                return await client.embed_texts(texts)
        result = asyncio.run(run())
    assert reversing.finished == [2, 1, 0, 5, 4, 3]  # each window of 3 answered last first
    assert reversing.peak == 3
    np.testing.assert_array_equal(result.vectors, direct_texts(api_client, texts, batch_size=1))


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_429_and_503_are_retried_then_the_answer_is_the_real_one(api_client, relay, flavour):
    relay.canned = refusals(429, 503, 429, retry_after="0")
    if flavour == "sync":
        with sync_client(relay, model=MODEL) as client:
            result = client.embed_texts(TEXTS[:2])
    else:
        async def run() -> ec.Embeddings:
            async with async_client(relay, model=MODEL) as client:
                return await client.embed_texts(TEXTS[:2])
        result = asyncio.run(run())
    assert len(relay.requests) == 4
    np.testing.assert_array_equal(result.vectors, direct_texts(api_client, TEXTS[:2]))


def test_retries_give_up_after_the_policy_with_the_servers_detail(relay):
    relay.canned = refusals(*[503] * 10)
    with sync_client(relay, model=MODEL, retry=ec.RetryPolicy(attempts=3, initial_wait_s=0, max_wait_s=0)) as client:
        with pytest.raises(ec.ServiceUnavailableError) as raised:
            client.embed_texts(["x"])
    assert raised.value.status_code == 503 and raised.value.detail == "refused with 503 on purpose"
    assert len(relay.requests) == 3


def test_the_wait_follows_retry_after_up_to_the_policys_cap():
    from tenacity import RetryCallState

    policy = ec.RetryPolicy(attempts=3, initial_wait_s=0.5, max_wait_s=10)
    wait = policy.tenacity_arguments()["wait"]
    state = RetryCallState(None, None, (), {})
    for asked, expected in [("2", 2.0), ("3600", 10.0)]:
        response = httpx.Response(429, headers={"Retry-After": asked}, json={"detail": "busy"})
        state.set_exception((ec.RateLimitError, ec.errors.error_for(response), None))
        assert wait(state) == expected
    state.set_exception((ec.ServiceUnavailableError, ec.ServiceUnavailableError(503, "down"), None))
    assert 0 <= wait(state) <= 10  # no Retry-After: exponential back-off with jitter


def test_a_client_error_is_not_retried_and_carries_the_documented_detail(relay):
    with sync_client(relay, model="CLIP/clip-vit-b-16") as client:
        with pytest.raises(ec.BadRequestError) as raised:
            client.embed_texts(["x"])
    assert raised.value.detail.startswith("Model mismatch: requested model 'CLIP/clip-vit-b-16'")
    assert len(relay.requests) == 1


def test_a_bad_image_raises_a_bad_request_naming_it(relay):
    with sync_client(relay, batch_size=8) as client:
        with pytest.raises(ec.BadRequestError) as raised:
            client.embed_images([encoded(random_image()), b"definitely not an image"])
    assert raised.value.status_code == 400 and raised.value.detail.startswith("input[1]: data is not a decodable image")


def test_one_failing_batch_fails_the_bulk_job_and_stops_the_rest(relay):
    relay.canned = lambda request: (httpx.Response(422, json={"detail": "Invalid input data: no"})
                                    if len(relay.requests) == 2 else None)
    with sync_client(relay, model=MODEL, batch_size=1, max_concurrency=1) as client:
        with pytest.raises(ec.InvalidInputError):
            client.embed_texts(TEXTS)
    assert len(relay.requests) < len(TEXTS)


def test_rank_equals_the_rank_route(api_client, relay):
    images = [encoded(image) for image in distinct_images()[:3]]
    query = {"type": "image_base64", "image_base64": b64(images[1])}
    direct = api_client.post("/rank", json={"model": MODEL, "query": query,
                                            "candidates": ["a cat", "a dog", "a kite"], "top_k": 2}).json()
    with sync_client(relay) as client:
        ranked = client.rank(images[1], ["a cat", "a dog", "a kite"], top_k=2)
        same_kind = client.rank("a heron", [images[0], "a heron"])
    assert ranked.scoring == direct["scoring"] == "softmax"
    assert [(row.index, row.cosine, row.probability) for row in ranked.results] == [
        (row["index"], row["cosine"], row["probability"]) for row in direct["results"]]
    assert same_kind.scoring == "cosine" and same_kind.results[0].index == 1


def test_capabilities_and_model_come_from_the_server(relay):
    with sync_client(relay) as client:
        assert client.model() == MODEL
        assert client.capabilities()["supports_image"] is True


def test_inputs_the_client_cannot_send_are_refused_before_any_request(relay):
    with sync_client(relay, model=MODEL) as client:
        with pytest.raises(TypeError, match="not an image"):
            client.embed_images([12345])
        with pytest.raises(ValueError, match="batch_size"):
            ec.Client(batch_size=0)
    assert relay.requests == []


def test_the_client_package_needs_no_torch():
    """Importing every module of the package, the index and search included, loads no torch,
    and no distribution it requires (with its ``index`` extra) requires torch."""
    modules = sorted(f"embedding_client.{path.stem}" for path in
                     Path(ec.__file__).parent.glob("*.py") if path.stem != "__main__")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'transformers', 'open_clip', 'openvino', "
            "'bentoml') if m in sys.modules)\n"
            "print(heavy)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    assert "torch" not in required_distributions("multimodal-embedding-client", extras={"index", "images"})


def required_distributions(name: str, extras: set[str]) -> set[str]:
    """Every distribution ``name`` needs, transitively, through installed metadata."""
    from importlib.metadata import PackageNotFoundError, requires
    from packaging.requirements import Requirement

    seen: set[str] = set()
    pending = [(name, extras)]
    while pending:
        current, wanted = pending.pop()
        try:
            declared = requires(current) or []
        except PackageNotFoundError:
            continue
        for line in declared:
            requirement = Requirement(line)
            environment = [{"extra": extra} for extra in (wanted or {""})]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environment):
                continue
            key = requirement.name.lower().replace("_", "-")
            if key not in seen:
                seen.add(key)
                pending.append((key, set(requirement.extras)))
    return seen


def test_ctrl_c_during_a_bulk_job_sends_nothing_more_and_does_not_wait(api_client, relay):
    """The interrupt reaches the caller while requests are in flight; no queued batch is
    sent afterwards."""
    import _thread
    import threading

    release = threading.Event()

    def interrupted(request: httpx.Request) -> httpx.Response | None:
        if len(relay.requests) == 1:
            _thread.interrupt_main()
        release.wait(30)  # held until the test has seen the interrupt
        return None

    relay.canned = interrupted
    with sync_client(relay, model=MODEL, batch_size=1, max_concurrency=2) as client:
        with pytest.raises(KeyboardInterrupt):
            client.embed_texts(TEXTS)
        release.set()
    assert len(relay.requests) <= 2


def test_a_lone_image_of_any_kind_is_one_image(api_client, relay, tmp_path):
    data = encoded(random_image())
    path = tmp_path / "one.png"
    path.write_bytes(data)
    with sync_client(relay) as client:
        for item in (path, data, random_image()):
            np.testing.assert_allclose(client.embed_images(item).vectors, direct_image(api_client, data)[None],
                                       atol=1e-6)


def test_retry_after_as_an_http_date_without_a_zone_is_utc():
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=False)
    naive = when.rsplit(" ", 1)[0] + " -0000"
    seconds = ec.errors.retry_after_s(httpx.Response(503, headers={"Retry-After": naive}))
    assert 20 < seconds <= 30
