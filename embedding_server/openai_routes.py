"""The OpenAI-compatible routes: ``POST /v1/embeddings``, ``GET /v1/models`` and
``GET /v1/models/{model}``, in the shapes of OpenAI's API (README, "OpenAI-compatible API").

They are a second way into the one pipeline (same model check, limits, fetching, decoding and
Encoder calls as ``POST /embeddings``); only the request and response shapes differ. Their
errors have OpenAI's shape (:mod:`embedding_server.http_api.error_bodies`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from embedding_server.http_api.encoding import openai_embeddings_body
from embedding_server.http_api.errors import ApiError
from embedding_server.http_api.json_route import OrjsonRoute
from embedding_server.http_api.metrics import counted_request
from embedding_server.http_api.openai_schemas import OpenAIEmbeddingRequest
from embedding_server.http_api.schemas import ImageBase64Input, ImageUrlInput
from embedding_server.nested_dimensions import check_dimensions, shortened
from embedding_server.pipeline import EmbeddingPipeline, ImageInput, names_in
from embedding_server.routes import answered, current_pipeline

router = APIRouter(prefix="/v1", route_class=OrjsonRoute)


def image_input(reference: str) -> ImageInput:
    """An image of ``input``: a ``data:`` URI carries the image itself, anything else is a URL
    (fetched under the URL policy of ``image_url`` inputs)."""
    if reference.lstrip()[:5].lower() == "data:":
        return ImageBase64Input.model_construct(type="image_base64", image_base64=reference)
    return ImageUrlInput.model_construct(type="image_url", image_url=reference)  # "" fails as a URL


def _with_param(error: ApiError, param: str) -> ApiError:
    """A client error naming ``param`` as the field at fault unless it names one already; the
    error itself is left as it is (the coalescer may have handed it to several requests)."""
    if error.param is not None or error.status_code >= 500:
        return error
    return ApiError(error.status_code, error.detail, param=param, code=error.code)


@router.post("/embeddings")
async def create_embeddings(request: OpenAIEmbeddingRequest,
                            pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> Response:
    """Counted by ``modality`` (text or image)."""
    with counted_request("/v1/embeddings", request.modality):
        pipeline.check_model(request.model)
        info = await pipeline.model_info()
        check_dimensions(pipeline.model, request.dimensions, info.dimension)
        name_of = names_in("input", isinstance(request.input, str))
        try:
            if request.modality == "image":
                images = [image_input(item) for item in request.items]
                vectors, tokens = await answered(pipeline.image_vectors(images, name_of)), 0  # no tokens
            else:
                vectors, tokens = await answered(pipeline.text_vectors_and_tokens(request.items, name_of))
        except ApiError as error:
            raise _with_param(error, "input") from None
        body = openai_embeddings_body(shortened(vectors, request.dimensions), request.encoding_format,
                                      pipeline.model.id, tokens)
        return Response(body, media_type="application/json")


def _model_object(pipeline: EmbeddingPipeline) -> dict[str, Any]:
    return {"id": pipeline.model.id, "object": "model", "created": pipeline.created,
            "owned_by": pipeline.model.family}


@router.get("/models")
async def list_models(pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> dict[str, Any]:
    """The loaded model, the only one this server answers for."""
    return {"object": "list", "data": [_model_object(pipeline)]}


@router.get("/models/{model:path}")
async def retrieve_model(model: str, pipeline: EmbeddingPipeline = Depends(current_pipeline)) -> dict[str, Any]:
    pipeline.check_model(model)
    return _model_object(pipeline)
