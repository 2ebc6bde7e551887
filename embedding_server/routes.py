"""The documented routes (``spec/api-reference.txt``), and ``POST /rank`` and
``POST /embeddings/frames`` beside them.

BentoML's own ``@bentoml.api`` routes are POST-only and answer validation errors with a
400-shaped body, so the public API is a FastAPI app (:mod:`embedding_server.app`), where GET
routes, 422s and ``{"detail": ...}`` bodies are native. Each route takes the served pipeline
from :func:`current_pipeline`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, TypeVar

import bentoml
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from embedding_server import ranking
from embedding_server.http_api.encoding import embedding_body, frames_body
from embedding_server.http_api.errors import MODEL_NOT_HEALTHY, ApiError
from embedding_server.http_api.json_route import OrjsonRoute
from embedding_server.http_api.metrics import counted_request
from embedding_server.http_api.schemas import (
    Capabilities,
    CurrentModel,
    EmbeddingRequest,
    FramesRequest,
    RankRequest,
)
from embedding_server.pipeline import EmbeddingPipeline
from models.catalogue import CATALOGUE, IMAGE, TEXT, VIDEO, families

logger = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 5.0
T = TypeVar("T")

router = APIRouter(route_class=OrjsonRoute)


def current_pipeline(service: Any = Depends(bentoml.get_current_service)) -> EmbeddingPipeline:
    return service.pipeline


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
                        backend=info.backend, precision=info.precision, weights=info.weights, variant=info.variant,
                        store_tag=info.store_tag, dimension=info.dimension)


@router.get("/model/capabilities", response_model=Capabilities)
async def capabilities(pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> Capabilities:
    info = await pipeline.model_info()
    return Capabilities(model=info.id, modalities=info.modalities,
                        supports_text=TEXT in info.modalities,
                        supports_image=IMAGE in info.modalities,
                        supports_video=VIDEO in info.modalities)


async def answered(call: Awaitable[T]) -> T:
    """``call``'s result; an unexpected failure is logged and answered 500 with its reason."""
    try:
        return await call
    except ApiError:
        raise
    except Exception as error:
        logger.exception("embedding failed")
        raise ApiError(500, f"Error creating embedding: {error}") from error


@router.post("/embeddings")
async def embeddings(request: EmbeddingRequest,
                     pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> Response:
    with counted_request("/embeddings", request.input.type):
        embedding = await answered(pipeline.embed(request))
        return Response(embedding_body(embedding), media_type="application/json")


@router.post("/embeddings/frames")
async def embedding_frames(request: FramesRequest,
                           pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> Response:
    """A video input's vectors, as ``/embeddings`` gives them, with each frame's number and
    time in the video (README, "Frame times")."""
    with counted_request("/embeddings/frames", request.input.type):
        found = await answered(pipeline.embed_frames(request))
        body = frames_body(found.vectors, found.frames, found.timestamps, found.fps,
                           model=pipeline.model.id, encoding_format=request.encoding_format)
        return Response(body, media_type="application/json")


@router.post("/rank")
async def rank(request: RankRequest, pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> dict[str, Any]:
    """One query against candidates, best first: each one's cosine and the model's probability
    (README, "Ranking"); counted by the query's input type."""
    with counted_request("/rank", request.query.type):
        return await answered(ranking.rank(pipeline, request))
