"""API keys and CORS on the served app, and the error shape of every middleware refusal on the
OpenAI-compatible paths (401, 408, 413, 429, 504)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedding_server.app import build_app
from embedding_server.http_api.api_keys import MISSING_KEY, WRONG_KEY
from embedding_server.http_api.body_limit import BodyLimitMiddleware
from embedding_server.http_api.concurrency_limit import ConcurrencyLimitMiddleware
from embedding_server.http_api.request_timeout import RequestTimeoutMiddleware
from embedding_server.routes import current_pipeline
from embedding_server.settings import Settings, SettingsError, load_settings
from helpers import TEST_MODEL_ID as MODEL
from helpers import in_process_pipeline, model_info

KEYS = ("sk-first-key-0123456789", "sk-second-key-9876543210")
ORIGIN = "https://search.example.com"
TEXT = {"model": MODEL, "input": {"type": "text", "text": "a cat"}, "encoding_format": "float"}
OPENAI_TEXT = {"model": MODEL, "input": "a cat"}


@pytest.fixture(scope="module")
def pipeline(tiny_entry: Path):
    from models.catalogue import find_model

    model = find_model(MODEL)
    return in_process_pipeline(model, model.adapter.load_runner(tiny_entry), None)


def served(pipeline, **settings) -> TestClient:
    """A client of the app built with ``settings``, serving ``pipeline``."""
    app = build_app(Settings(**settings))
    app.dependency_overrides[current_pipeline] = lambda: pipeline
    return TestClient(app)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- API keys ---

@pytest.fixture(scope="module")
def keyed(pipeline) -> TestClient:
    return served(pipeline, api_keys=",".join(KEYS))


@pytest.mark.parametrize("headers, message", [
    ({}, MISSING_KEY),
    (bearer("sk-a-guess"), WRONG_KEY),
    (bearer(KEYS[0] + "x"), WRONG_KEY),
    (bearer(KEYS[0][:-1]), WRONG_KEY),
    ({"Authorization": f"Basic {KEYS[0]}"}, MISSING_KEY),
    ({"Authorization": "Bearer "}, MISSING_KEY),
], ids=["none", "wrong", "longer", "prefix", "basic-scheme", "empty"])
def test_requests_without_a_valid_key_are_401(keyed, headers, message):
    for path, body in (("/embeddings", TEXT), ("/rank", {})):
        response = keyed.post(path, json=body, headers=headers)
        assert (response.status_code, response.json()) == (401, {"detail": message})
        assert response.headers["www-authenticate"] == "Bearer"
    assert keyed.get("/models", headers=headers).status_code == 401
    error = keyed.post("/v1/embeddings", json=OPENAI_TEXT, headers=headers).json()["error"]
    assert (error["message"], error["type"], error["code"]) == (message, "invalid_request_error", "invalid_api_key")
    assert "sk-a-guess" not in str(error)


def test_every_configured_key_is_accepted_and_the_scheme_is_case_insensitive(keyed):
    for key in KEYS:
        assert keyed.post("/embeddings", json=TEXT, headers=bearer(key)).status_code == 200
        assert keyed.post("/v1/embeddings", json=OPENAI_TEXT, headers=bearer(key)).status_code == 200
    assert keyed.get("/models", headers={"Authorization": f"bearer {KEYS[1]}"}).status_code == 200


def test_health_needs_no_key(keyed):
    assert keyed.get("/health").json() == {"status": "healthy"}


def test_a_request_without_a_key_is_refused_before_its_body_is_read(pipeline):
    client = served(pipeline, api_keys=KEYS[0], max_body_bytes=1024)
    response = client.post("/embeddings", content=b"x" * 4096, headers={"content-type": "application/json"})
    assert response.status_code == 401  # not 413: the body was never received


def test_keys_from_a_file_skip_blank_lines_and_comments(tmp_path: Path, monkeypatch):
    key_file = tmp_path / "keys"
    key_file.write_text(f"# production keys\n{KEYS[0]}\n\n  {KEYS[1]}  \n", encoding="utf-8")
    monkeypatch.setenv("EMBEDDING_API_KEYS", str(key_file))
    assert load_settings().api_keys == KEYS


def test_a_key_file_without_keys_stops_start_up(tmp_path: Path, monkeypatch):
    key_file = tmp_path / "keys"
    key_file.write_text("# only a comment\n\n", encoding="utf-8")
    monkeypatch.setenv("EMBEDDING_API_KEYS", str(key_file))
    with pytest.raises(SettingsError, match="holds no key"):
        load_settings()


@pytest.mark.parametrize("value", ["", "  ", ",", " , "], ids=["empty", "blank", "comma", "blank-items"])
def test_keys_set_to_nothing_stop_start_up_rather_than_leave_the_api_open(monkeypatch, value):
    monkeypatch.setenv("EMBEDDING_API_KEYS", value)
    with pytest.raises(SettingsError, match="holds no key"):
        load_settings()


def test_keys_starting_with_a_slash_are_keys_unless_they_name_a_file(monkeypatch):
    monkeypatch.setenv("EMBEDDING_API_KEYS", "/s3cretKEY+abc=,other")
    assert load_settings().api_keys == ("/s3cretKEY+abc=", "other")
    monkeypatch.setenv("EMBEDDING_API_KEYS", "/s3cretKEY+abc=")
    assert load_settings().api_keys == ("/s3cretKEY+abc=",)


def test_a_bad_key_is_refused_without_being_printed(monkeypatch):
    monkeypatch.setenv("EMBEDDING_API_KEYS", "sk-good-one,sk with space")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "key 2" in str(refused.value) and "sk-good-one" not in str(refused.value)
    assert "sk-good-one" not in repr(Settings(api_keys="sk-good-one"))


# --- CORS ---

@pytest.fixture(scope="module")
def cors(pipeline) -> TestClient:
    return served(pipeline, cors_allow_origins=ORIGIN, api_keys=KEYS[0])


def preflight(client: TestClient, origin: str) -> httpx.Response:
    return client.options("/v1/embeddings", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_a_preflight_from_an_allowed_origin_is_answered_without_a_key(cors):
    response = preflight(cors, ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert response.headers["access-control-max-age"] == "600"


def test_a_preflight_with_the_openai_js_sdk_s_headers_is_allowed(cors):
    response = cors.options("/v1/embeddings", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os,x-stainless-retry-count"})
    assert response.status_code == 200
    assert "x-stainless-os" in response.headers["access-control-allow-headers"].lower()


def test_other_origins_get_no_cors_permission(cors):
    response = preflight(cors, "https://evil.example.net")
    assert response.status_code == 400 and "access-control-allow-origin" not in response.headers
    plain = cors.post("/v1/embeddings", json=OPENAI_TEXT,
                      headers={"Origin": "https://evil.example.net", **bearer(KEYS[0])})
    assert "access-control-allow-origin" not in plain.headers


def test_answers_to_an_allowed_origin_carry_cors_headers_refusals_included(cors):
    headers = {"Origin": ORIGIN}
    answered = cors.post("/v1/embeddings", json=OPENAI_TEXT, headers={**headers, **bearer(KEYS[0])})
    refused = cors.post("/v1/embeddings", json=OPENAI_TEXT, headers=headers)
    assert (answered.status_code, refused.status_code) == (200, 401)
    assert answered.headers["access-control-allow-origin"] == refused.headers["access-control-allow-origin"] == ORIGIN
    exposed = refused.headers["access-control-expose-headers"].lower()
    assert "www-authenticate" in exposed and "retry-after" in exposed


def test_cors_is_off_by_default(api_client):
    response = api_client.options("/embeddings", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in api_client.get("/health", headers={"Origin": ORIGIN}).headers


# --- one concurrency limit for every embedding route ---

class GatedEncoder:
    """An Encoder whose text calls wait until ``gate`` is set."""

    def __init__(self, info) -> None:
        self.gate, self.entered, self._info = asyncio.Event(), asyncio.Event(), info

    async def encode_text(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        await self.gate.wait()
        return np.full((len(texts), 4), 0.5, dtype=np.float32)

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        raise AssertionError("no image is sent here")

    async def count_tokens(self, texts: list[str]) -> np.ndarray:
        return np.ones(len(texts), dtype=np.int64)

    async def info(self):
        return self._info


def test_the_embedding_routes_share_one_concurrency_limit_and_health_stays_open():
    from embedding_server.composition import build_pipeline
    from models.catalogue import find_model

    model = find_model(MODEL)
    settings = Settings(max_concurrency=1)
    encoder = GatedEncoder(model_info(model, 4))
    pipeline = build_pipeline(model, None, encoder, settings)
    app = build_app(settings)
    app.dependency_overrides[current_pipeline] = lambda: pipeline
    rank_body = {"model": MODEL, "query": {"type": "text", "text": "a"}, "candidates": ["b"]}
    frames_body = {**TEXT, "input": {"type": "video_file", "video_path": "clip.mp4"}}

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            held = asyncio.create_task(client.post("/v1/embeddings", json=OPENAI_TEXT))
            await encoder.entered.wait()  # the one slot is taken
            refused = [await client.post("/rank", json=rank_body), await client.post("/embeddings", json=TEXT),
                       await client.post("/embeddings/frames", json=frames_body),
                       await client.post("/v1/embeddings", json=OPENAI_TEXT)]
            health = await client.get("/health")
            encoder.gate.set()
            return [response.status_code for response in refused] + [health.status_code, (await held).status_code]

    assert asyncio.run(scenario()) == [429, 429, 429, 429, 200, 200]


# --- middleware refusals in OpenAI's shape on /v1/* ---

def openai_refusal(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind and set(error) == {"message", "type", "param", "code"}
    return error


def test_an_oversized_body_is_413_in_openai_shape(pipeline):
    client = served(pipeline, max_body_bytes=1024)
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "a" * 4096})
    assert "Request body too large" in openai_refusal(response, 413, "invalid_request_error")["message"]
    documented = client.post("/embeddings", json={**TEXT, "input": {"type": "text", "text": "a" * 4096}})
    assert documented.status_code == 413 and set(documented.json()) == {"detail"}


async def _via(app, method: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.request(method, path, content=b"{}")


async def never_answers(scope, receive, send) -> None:
    await asyncio.Event().wait()


def test_a_stalled_body_is_408_in_openai_shape():
    async def stalled_receive():
        await asyncio.Event().wait()

    async def scenario() -> list:
        sent: list = []

        async def send(message) -> None:
            sent.append(message)

        limit = BodyLimitMiddleware(never_answers, max_bytes=1024, timeout_s=0.05)
        await limit({"type": "http", "path": "/v1/embeddings", "headers": []}, stalled_receive, send)
        return sent

    start, body = asyncio.run(scenario())
    assert start["status"] == 408
    assert b'"type":"invalid_request_error"' in body["body"] and b'"error"' in body["body"]


def test_a_request_beyond_the_concurrency_limit_is_429_in_openai_shape():
    limited = ConcurrencyLimitMiddleware(never_answers, max_concurrency=0, paths=("/v1/embeddings",))
    error = openai_refusal(asyncio.run(_via(limited, "POST", "/v1/embeddings")), 429, "requests")
    assert error["code"] == "rate_limit_exceeded"


def test_a_timed_out_request_is_504_in_openai_shape():
    response = asyncio.run(_via(RequestTimeoutMiddleware(never_answers, timeout=0.05), "POST", "/v1/embeddings"))
    assert "did not complete within" in openai_refusal(response, 504, "server_error")["message"]
