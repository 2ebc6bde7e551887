"""The public HTTP routes, a FastAPI app mounted on the entry service.

BentoML's own ``@bentoml.api`` routes are POST-only and answer validation errors with a
400-shaped body, so the public API lives here, where GET routes, 422s and ``{"detail": ...}``
bodies are native. :func:`build_app` makes the app with the limits of the settings it is given
(``service.py`` builds the one it serves).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import bentoml
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from embedding_server.http_api.body_limit import BodyLimitMiddleware
from embedding_server.http_api.concurrency_limit import ConcurrencyLimitMiddleware
from embedding_server.http_api.encoding import embedding_body
from embedding_server.http_api.errors import MODEL_NOT_HEALTHY, ApiError, InvalidInput
from embedding_server.http_api.json_route import OrjsonRoute
from embedding_server.http_api.schemas import Capabilities, CurrentModel, EmbeddingRequest
from embedding_server.pipeline import EmbeddingPipeline
from embedding_server.settings import Settings
from embedding_server.validation_errors import MAX_REPORTED_ERRORS, describe_errors, location
from models.catalogue import CATALOGUE, IMAGE, TEXT, VIDEO, families

logger = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 5.0

router = APIRouter(route_class=OrjsonRoute)


def build_app(settings: Settings) -> FastAPI:
    """The public app: the routes, ``{"detail": ...}`` error bodies, and the request-size and
    concurrency limits of ``settings``.

    The last middleware added runs first: the body is received whole (cap, deadline) before
    the request takes a concurrency slot. Each entry-service worker process admits its share
    of ``EMBEDDING_MAX_CONCURRENCY``."""
    app = FastAPI(title="Multimodal embedding server",
                  description="Text, image and video embeddings with CLIP-style models.")
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_middleware(ConcurrencyLimitMiddleware,
                       max_concurrency=math.ceil(settings.max_concurrency / settings.entry_workers),
                       paths=("/embeddings",))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    return app


def current_pipeline(service: Any = Depends(bentoml.get_current_service)) -> EmbeddingPipeline:
    return service.pipeline


def _validation_message(error: RequestValidationError) -> str:
    errors = error.errors()
    if errors and errors[0].get("type") == "json_invalid":  # then the only error: no body to validate
        reason = (errors[0].get("ctx") or {}).get("error", "")
        return f"malformed JSON body ({reason})" if reason else "malformed JSON body"
    return describe_errors(errors, lambda item: location(item, "body", skip=("body",)),
                           MAX_REPORTED_ERRORS) or "invalid request"


def _detail_response(error: ApiError) -> JSONResponse:
    """``{"detail": ...}`` that always encodes as UTF-8: a detail may quote the client's input
    (a key, a tag, a model name), and a lone surrogate in it would fail the response itself."""
    detail = error.detail.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"detail": detail}, status_code=error.status_code)


async def _on_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    return _detail_response(InvalidInput(_validation_message(error)))


async def _on_api_error(_: Request, error: ApiError) -> JSONResponse:
    return _detail_response(error)


@router.get("/health")
async def health(pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> Any:
    try:
        await asyncio.wait_for(pipeline.check_health(), HEALTH_TIMEOUT_S)
    except Exception as error:  # any failure to reach the encoder means "not healthy"
        logger.warning("health check failed: %s", error)
        return JSONResponse({"detail": MODEL_NOT_HEALTHY}, status_code=500)
    return {"status": "healthy"}


@router.get("/models")
async def list_models(pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> dict[str, Any]:
    return {
        "current_model": pipeline.model.id,
        "available_models": families(),
        "total_models": len(CATALOGUE),
    }


@router.get("/model/current", response_model=CurrentModel)
async def current_model(pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> CurrentModel:
    info = await pipeline.model_info()
    return CurrentModel(model=info.id, device=info.device, use_openvino=info.backend == "openvino",
                        backend=info.backend, weights=info.weights, variant=info.variant,
                        store_tag=info.store_tag, dimension=info.dimension)


@router.get("/model/capabilities", response_model=Capabilities)
async def capabilities(pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> Capabilities:
    info = await pipeline.model_info()
    return Capabilities(model=info.id, modalities=info.modalities,
                        supports_text=TEXT in info.modalities,
                        supports_image=IMAGE in info.modalities,
                        supports_video=VIDEO in info.modalities)


@router.post("/embeddings")
async def embeddings(request: EmbeddingRequest,
                     pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> Response:
    try:
        embedding = await pipeline.embed(request)
    except ApiError:
        raise
    except Exception as error:
        logger.exception("embedding failed")
        raise ApiError(500, f"Error creating embedding: {error}") from error
    return Response(embedding_body(embedding), media_type="application/json")
