"""The interactive API docs, Swagger UI at ``/docs``, served whole by the server.

FastAPI's own pages load their scripts, styles and favicon from public CDNs, so in an
air-gapped deployment they stay blank. This page loads the same Swagger UI build from the
server: the files of the pinned ``fastapi-offline`` package (Swagger UI 5.32.6), each at a
fixed path of its own; no folder is mounted, so nothing else of the package is reachable.
There is no ReDoc page: ReDoc's script loads its footer logo from Redocly's CDN, whatever
page serves it.

The schema FastAPI builds is completed here for the page: named examples of every request
and answer body (kept beside the models, in ``schemas`` and ``openai_schemas``), and the error
bodies the app really answers (``{"detail": ...}``, OpenAI's shape and 400 on ``/v1/``) in
place of FastAPI's generic 422. When the API requires keys, the schema declares the bearer
scheme on every route but the open ones, so Swagger UI's "Authorize" button sends the key with
each "Try it out" request.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Collection

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse

from embedding_server.http_api import openai_schemas as openai
from embedding_server.http_api import schemas
from embedding_server.http_api.api_keys import MISSING_KEY
from embedding_server.http_api.error_bodies import OPENAI_PATHS
from embedding_server.http_api.errors import INVALID_API_KEY
from embedding_server.http_api.schemas import Examples

SWAGGER_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
# Each served file of the package, by name, with its media type.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
BEARER_SCHEME = "bearer"


def _from_fields(summary: str, model: type[BaseModel]) -> Examples:
    """A body of ``model`` made of each field's first example."""
    return {"example": {"summary": summary, "value": {name: field.examples[0] if field.examples else None
                                                      for name, field in model.model_fields.items()}}}


# Each operation's examples: its request body's (None: it takes none) and its answer's.
EXAMPLES: dict[tuple[str, str], tuple[Examples | None, Examples]] = {
    ("post", "/embeddings"): (schemas.EMBEDDING_REQUEST_EXAMPLES, schemas.EMBEDDING_RESPONSE_EXAMPLES),
    ("post", "/embeddings/frames"): (schemas.VIDEO_REQUEST_EXAMPLES, schemas.FRAMES_RESPONSE_EXAMPLES),
    ("post", "/rank"): (schemas.RANK_REQUEST_EXAMPLES, schemas.RANK_RESPONSE_EXAMPLES),
    ("post", "/v1/embeddings"): (openai.OPENAI_REQUEST_EXAMPLES, openai.OPENAI_RESPONSE_EXAMPLES),
    ("get", "/health"): (None, schemas.HEALTH_RESPONSE_EXAMPLES),
    ("get", "/models"): (None, schemas.MODELS_RESPONSE_EXAMPLES),
    ("get", "/model/current"): (None, _from_fields("The served model", schemas.CurrentModel)),
    ("get", "/model/capabilities"): (None, _from_fields("A text and image model", schemas.Capabilities)),
    ("get", "/v1/models"): (None, openai.OPENAI_MODELS_EXAMPLES),
    ("get", "/v1/models/{model}"): (None, openai.OPENAI_MODEL_EXAMPLES),
}
_DETAIL = {"title": "Error", "type": "object", "required": ["detail"],
           "properties": {"detail": {"type": "string", "description": "What went wrong."}}}
_OPENAI_ERROR = {"title": "OpenAIError", "type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string", "description": "What went wrong."},
        "type": {"type": "string", "description": "invalid_request_error, requests or server_error."},
        "param": {"type": ["string", "null"], "description": "The request field at fault, if one is."},
        "code": {"type": ["string", "null"], "description": "A machine-readable reason, if there is one."}}}}}


def _openai_error(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _error(description: str, openai_shape: bool, summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": _OPENAI_ERROR if openai_shape else _DETAIL, "examples": {"error": {"summary": summary,
                                                                                    "value": body}}}}}


def _invalid_input(path: str) -> tuple[str, dict[str, Any]]:
    """The status and response of a request body that fails validation on ``path``."""
    if path.startswith(OPENAI_PATHS):
        return "400", _error("Invalid request", True, "A field of the wrong type", _openai_error(
            "input: must be a string or a list of strings", "input", None))
    return "422", _error("Invalid input", False, "A required field missing",
                         {"detail": "Invalid input data: input.text: Field required"})


def _unauthorised(path: str) -> dict[str, Any]:
    openai_shape = path.startswith(OPENAI_PATHS)
    body = _openai_error(MISSING_KEY, None, INVALID_API_KEY) if openai_shape else {"detail": MISSING_KEY}
    return _error("No valid API key", openai_shape, "No Authorization header", body)


def docs_paths(app: FastAPI) -> tuple[str, ...]:
    """Every path the docs page needs: the page, its files and ``app``'s schema."""
    return (SWAGGER_URL, OAUTH2_REDIRECT_URL, str(app.openapi_url),
            *(f"{ASSETS_URL}/{name}" for name in ASSETS))


def _asset_file(name: str) -> Path:
    return Path(str(files("fastapi_offline").joinpath("static", name)))


def add_docs(app: FastAPI, keyed: bool, open_paths: Collection[str]) -> None:
    """``app``'s docs page and its files, for an app made with ``docs_url=None`` and
    ``redoc_url=None``; with ``keyed``, its schema asks for the bearer key on every path but
    ``open_paths``."""
    title = app.title

    def url(request: Request, path: str) -> str:
        """``path`` below the root path the app is served under (a proxy's prefix)."""
        return f"{request.scope.get('root_path', '')}{path}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=url(request, str(app.openapi_url)), title=f"{title} - Swagger UI",
                                   swagger_js_url=url(request, f"{ASSETS_URL}/swagger-ui-bundle.js"),
                                   swagger_css_url=url(request, f"{ASSETS_URL}/swagger-ui.css"),
                                   swagger_favicon_url=url(request, f"{ASSETS_URL}/favicon.png"),
                                   oauth2_redirect_url=url(request, OAUTH2_REDIRECT_URL))

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route(SWAGGER_URL, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, oauth2_redirect, include_in_schema=False)
    for name, media_type in ASSETS.items():
        app.add_route(f"{ASSETS_URL}/{name}", _asset_endpoint(_asset_file(name), media_type), include_in_schema=False)
    _complete_schema(app, keyed, frozenset(open_paths))


def _asset_endpoint(path: Path, media_type: str) -> Any:
    async def asset(request: Request) -> FileResponse:
        return FileResponse(path, media_type=media_type)
    return asset


def _complete_schema(app: FastAPI, keyed: bool, open_paths: frozenset[str]) -> None:
    """``app.openapi`` made to complete the schema it builds (once: FastAPI keeps the built
    schema in ``app.openapi_schema``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _complete(build(), keyed, open_paths)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(schema: dict[str, Any], keyed: bool, open_paths: frozenset[str]) -> None:
    """Examples, the app's own error bodies and, with ``keyed``, the bearer scheme."""
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            request, answer = EXAMPLES.get((method, path), (None, None))
            responses = operation["responses"]
            if request is not None:
                operation["requestBody"]["content"]["application/json"]["examples"] = request
            if answer is not None:
                responses["200"]["content"]["application/json"]["examples"] = answer
            responses.pop("422", None)  # FastAPI's validation body, which the app never answers
            if "requestBody" in operation:
                status, response = _invalid_input(path)
                responses[status] = response
            if keyed and path not in open_paths:
                operation["security"] = [{BEARER_SCHEME: []}]
                responses["401"] = _unauthorised(path)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    if keyed:
        schema.setdefault("components", {})["securitySchemes"] = {BEARER_SCHEME: {
            "type": "http", "scheme": "bearer",
            "description": "One of the server's keys (EMBEDDING_API_KEYS), sent as 'Authorization: Bearer <key>'."}}
