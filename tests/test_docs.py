"""The interactive API docs (``/docs``): every script, style and icon comes from the server
itself, so the page works where no CDN can be reached; the schema it shows documents every
route with examples; and it stays open when the API requires keys.

In-process tests check the page, its files and the schema; the end-to-end test loads ``/docs``
of a real ``bentoml serve`` in headless Chromium with every name but loopback unresolvable,
and checks from Chromium's own network log that the page requested nothing of another host.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.testclient import TestClient

from embedding_server.app import OPEN_PATHS, build_app
from embedding_server.http_api.docs import docs_paths
from embedding_server.settings import Settings
from helpers import SERVED_API_KEY

MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")
BROWSER_TIMEOUT_S = 120
ROUTE_PATHS = ("/embeddings", "/embeddings/frames", "/rank", "/v1/embeddings", "/v1/models", "/model/capabilities")


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return build_app(Settings())


@pytest.fixture(scope="module")
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


@pytest.fixture(scope="module")
def openapi(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def references(html: str) -> list[str]:
    """The URLs the docs page loads: its script, style, icon and schema."""
    return [next(group for group in match.groups() if group) for match in REFERENCE.finditer(html)]


def test_the_docs_page_loads_nothing_from_another_host(client: TestClient):
    response = client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    found = references(response.text)
    assert any(url.endswith(".js") for url in found) and "/openapi.json" in found, found
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", response.text, re.IGNORECASE), response.text
    for url in found:
        assert not urlsplit(url).scheme and not urlsplit(url).netloc, url


def test_every_file_the_docs_page_loads_is_served_with_its_media_type(client: TestClient):
    for url in references(client.get("/docs").text):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(MEDIA_TYPES[Path(url).suffix]), (url, response.headers)
        assert len(response.content) > 0, url


def test_there_is_no_redoc_page(client: TestClient):
    """ReDoc's script fetches its footer logo from Redocly's CDN, so it is not served."""
    assert client.get("/redoc").status_code == 404


def test_the_docs_page_follows_the_root_path_of_a_proxy(app: FastAPI):
    html = TestClient(app, root_path="/embedder").get("/docs").text
    assert all(url.startswith("/embedder/") for url in references(html)), references(html)


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # a router FastAPI includes as a whole
        if included is not None:
            yield from _api_routes(included.routes)


def _operations(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    """Each documented operation of ``app`` by method and path as OpenAPI spells them."""
    return {(method.lower(), re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)): route
            for route in _api_routes(app.routes) if route.include_in_schema for method in route.methods}


def test_the_schema_lists_every_route_of_the_app(app: FastAPI, openapi: dict[str, Any]):
    documented = {(method, path) for path, item in openapi["paths"].items() for method in item}
    assert documented == set(_operations(app))
    assert {path for _, path in documented} >= {"/embeddings", "/embeddings/frames", "/rank", "/v1/embeddings"}


def test_every_request_body_has_examples_that_the_route_accepts(app: FastAPI, openapi: dict[str, Any]):
    for (method, path), route in _operations(app).items():
        if route.body_field is None:
            continue
        examples = openapi["paths"][path][method]["requestBody"]["content"]["application/json"]["examples"]
        assert examples, path
        model = route.body_field.field_info.annotation
        for name, example in examples.items():
            assert example["summary"], (path, name)
            model.model_validate(example["value"])  # raises if the example is not a valid request


def test_embeddings_has_a_named_example_for_every_input_type(openapi: dict[str, Any]):
    examples = openapi["paths"]["/embeddings"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    types = {example["value"]["input"]["type"] for example in examples.values()}
    assert types == {"text", "image_url", "image_base64", "video_frames", "video_url", "video_base64",
                     "video_file", "frames_batch"}


def test_every_answer_has_an_example(openapi: dict[str, Any]):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                examples = response["content"]["application/json"].get("examples")
                assert examples and all("value" in example for example in examples.values()), (method, path, status)


def test_validation_errors_are_documented_in_the_shape_the_app_answers(openapi: dict[str, Any]):
    """``{"detail": "..."}`` with 422 on the documented routes, OpenAI's shape with 400 on
    ``/v1/``: never FastAPI's list of errors, which the app does not answer."""
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    embeddings = openapi["paths"]["/embeddings"]["post"]["responses"]
    assert set(embeddings) == {"200", "422"}
    assert isinstance(embeddings["422"]["content"]["application/json"]["examples"]["error"]["value"]["detail"], str)
    openai = openapi["paths"]["/v1/embeddings"]["post"]["responses"]
    assert set(openai) == {"200", "400"}
    assert openai["400"]["content"]["application/json"]["examples"]["error"]["value"]["error"]["message"]


def test_every_field_has_a_description(openapi: dict[str, Any]):
    undescribed = [f"{name}.{field}" for name, schema in openapi["components"]["schemas"].items()
                   for field, definition in schema.get("properties", {}).items() if not definition.get("description")]
    assert undescribed == []


def test_with_api_keys_the_docs_stay_open_and_the_api_does_not():
    """The page, its files and the schema are open: they hold the public contract only (no
    key, model or setting), and a browser cannot send a bearer key when it opens a page. The
    schema declares the key, so "Authorize" in Swagger UI sends it with "Try it out"."""
    app = build_app(Settings(api_keys=(SERVED_API_KEY,)))
    client = TestClient(app)
    for path in docs_paths(app):
        assert client.get(path).status_code == 200, path
    assert client.post("/embeddings", json={}).status_code == 401
    assert client.get("/v1/models").status_code == 401
    openapi = client.get("/openapi.json").json()
    bearer = openapi["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for path, item in openapi["paths"].items():
        for operation in item.values():
            if path in OPEN_PATHS:
                assert "security" not in operation and "401" not in operation["responses"], path
            else:
                assert operation["security"] == [{"bearer": []}] and "401" in operation["responses"], path


def test_without_api_keys_the_schema_declares_none(openapi: dict[str, Any]):
    assert "securitySchemes" not in openapi["components"]
    assert all("security" not in operation for item in openapi["paths"].values() for operation in item.values())


# --- a real browser against a real server ---

def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium that can resolve no name but loopback's: a page that reaches for a
    CDN fails to load it. Its background services (updates, sync, autofill) are off."""
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-default-apps", "--metrics-recording-only",
               "--disable-features=AutofillServerCommunication", f"--user-data-dir={profile}",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000",
               *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=True)


def page_requests(net_log: Path, site: str) -> set[str]:
    """The URLs that a page of ``site`` requested, from Chromium's network log
    (``--log-net-log``): the requests whose network isolation key has ``site`` as its top frame,
    whatever their own host. The browser's own (update checks, accounts) have another key."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return {event["params"]["url"] for event in log["events"] if event["type"] == start_job
            and event.get("params", {}).get("network_isolation_key", "").split(" ")[0] == site}


@pytest.mark.e2e
def test_a_browser_renders_the_docs_of_a_keyed_server_with_no_network(keyed_server, tmp_path: Path):
    if shutil.which("chromium") is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's package where it can)")
    url = f"{keyed_server.url}/docs"
    net_log = tmp_path / "net-log.json"
    dom = chromium("--dump-dom", f"--log-net-log={net_log}", url, profile=tmp_path / "profile").stdout
    assert "opblock-summary-path" in dom, dom[:2000]  # an element only Swagger UI's script makes
    for path in ROUTE_PATHS:
        assert path in dom, path
    assert "Failed to load API definition" not in dom
    requested = page_requests(net_log, "http://127.0.0.1")
    assert {urlsplit(found).path for found in requested} >= {"/docs", "/openapi.json", "/docs/assets/favicon.png"}
    assert {urlsplit(found).netloc for found in requested} == {urlsplit(keyed_server.url).netloc}, requested
    screenshot = tmp_path / "docs.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1280,2000", url, profile=tmp_path / "profile")
    assert screenshot.stat().st_size > 10_000, "a blank page"
    print(f"screenshot: {screenshot}")
