"""The public app: every route (documented, ``/rank``, OpenAI-compatible), the interactive
docs (``/docs``, served whole by the server), error bodies in each API's shape, and the limits
and access rules of the settings.

:func:`build_app` makes it from the settings it is given (``service.py`` builds the one it
serves). Middleware, outermost first: CORS (so that browsers can read every answer, refusals
included, and preflights need no key), the API keys (a request without one is refused before
its body is read), the body limit (the body is received whole, within its cap and deadline),
then the concurrency limit (a request takes a slot only once its body is in).
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from embedding_server import openai_routes, routes
from embedding_server.http_api.api_keys import ApiKeyMiddleware
from embedding_server.http_api.body_limit import BodyLimitMiddleware
from embedding_server.http_api.concurrency_limit import ConcurrencyLimitMiddleware
from embedding_server.http_api.cors import cors_options
from embedding_server.http_api.docs import add_docs, docs_paths
from embedding_server.http_api.error_bodies import error_response
from embedding_server.http_api.errors import ApiError, InvalidInput
from embedding_server.settings import Settings
from embedding_server.validation_errors import MAX_REPORTED_ERRORS, describe_errors, location

WORK_PATHS = ("/embeddings", "/embeddings/frames", "/v1/embeddings", "/rank")  # the routes that embed: concurrency-limited
OPEN_PATHS = ("/health",)  # answered without an API key, as are the docs pages (docs_paths)


def build_app(settings: Settings) -> FastAPI:
    """The app with the routes, error shapes, limits and access rules of ``settings``.

    The last middleware added runs first. Each entry-service worker process admits its share
    of ``EMBEDDING_MAX_CONCURRENCY``."""
    app = FastAPI(title="Multimodal embedding server",
                  description="Text, image and video embeddings with CLIP-style models.",
                  docs_url=None, redoc_url=None)
    app.include_router(routes.router)
    app.include_router(openai_routes.router)
    add_docs(app, keyed=bool(settings.api_keys), open_paths=OPEN_PATHS)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_middleware(ConcurrencyLimitMiddleware,
                       max_concurrency=math.ceil(settings.max_concurrency / settings.entry_workers),
                       paths=WORK_PATHS)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    if settings.api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys, open_paths=(*OPEN_PATHS, *docs_paths(app)))
    if (cors := cors_options(settings)) is not None:
        app.add_middleware(CORSMiddleware, **cors)
    return app


def _validation_error(error: RequestValidationError) -> InvalidInput:
    """The client's mistake in one message, naming the first field at fault (``param``)."""
    errors = error.errors()
    if errors and errors[0].get("type") == "json_invalid":  # then the only error: no body to validate
        reason = (errors[0].get("ctx") or {}).get("error", "")
        return InvalidInput(f"malformed JSON body ({reason})" if reason else "malformed JSON body")
    message = describe_errors(errors, lambda item: location(item, "body", skip=("body",)), MAX_REPORTED_ERRORS)
    fields = [str(part) for part in (errors[0].get("loc", ()) if errors else ()) if part != "body"]
    return InvalidInput(message or "invalid request", param=fields[0] if fields else None)


async def _on_validation_error(request: Request, error: RequestValidationError) -> Response:
    return error_response(request.url.path, _validation_error(error))


async def _on_api_error(request: Request, error: ApiError) -> Response:
    return error_response(request.url.path, error)


async def _on_http_error(request: Request, error: HTTPException) -> Response:
    """The router's own answers (405 for a wrong method, 404) in the path's API shape."""
    return error_response(request.url.path, ApiError(error.status_code, str(error.detail)), error.headers)
