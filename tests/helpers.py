"""Helpers the test modules share: model ids, embedding calls, an in-process Encoder, and
pointing the public app at a pipeline of a test's own."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import numpy as np

TEST_MODEL_ID = "CLIP/clip-vit-b-32"  # the tiny random-weight entry of the session's store
QWEN_MODEL_ID = "QwenText/qwen3-embedding-0.6b"
# The API key and CORS origin of the session's served tiny CLIP (conftest.keyed_server).
SERVED_API_KEY = "sk-test-0123456789abcdef"
SERVED_ORIGIN = "https://app.example.com"


def embedding_body(item: dict, model: str = TEST_MODEL_ID, encoding_format: str = "float") -> dict:
    """A ``POST /embeddings`` body for one input item."""
    return {"model": model, "input": item, "encoding_format": encoding_format}


def embed(client: Any, item: dict, encoding_format: str = "float", model: str = TEST_MODEL_ID) -> Any:
    """``POST /embeddings`` through ``client`` (a Starlette ``TestClient`` or an ``httpx``
    client with a base URL)."""
    return client.post("/embeddings", json=embedding_body(item, model, encoding_format))


def vectors_of(response: Any) -> np.ndarray:
    """The float vectors of a 200 response (asserted), as an array."""
    assert response.status_code == 200, response.text
    return np.array(response.json()["embedding"], dtype=np.float32)


def model_info(model: Any, dimension: int, store_tag: str = "test") -> Any:
    """The ``ModelInfo`` an Encoder would report for a tiny random-weight ``model`` on CPU
    with PyTorch."""
    from embedding_server.composition import StoredEntry, model_info as encoder_model_info

    runner = SimpleNamespace(dimension=dimension, device=None, backend="pytorch", precision="f32")
    entry = StoredEntry(Path("."), store_tag, {"weights": "random", "variant": "tiny"})
    return encoder_model_info(model, runner, entry, "CPU")


class InProcessEncoder:
    """The Encoder service's calls, answered in worker threads by ``runner``, unbatched."""

    def __init__(self, runner: Any, info: Any) -> None:
        self._runner, self._info = runner, info

    async def encode_text(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self._runner.encode_text, texts)

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(self._runner.encode_images, pixels)

    async def count_tokens(self, texts: list[str]) -> np.ndarray:
        return np.asarray(await asyncio.to_thread(self._runner.count_tokens, texts))

    async def info(self) -> Any:
        return self._info


def in_process_pipeline(model: Any, runner: Any, preparer: Any, settings: Any = None,
                        store_tag: str = "test", entry: Any = None) -> Any:
    """The entry service's pipeline of ``model`` (as ``service.py`` composes it) over an
    :class:`InProcessEncoder`; ``entry`` (a ``StoredEntry``) gives its scoring."""
    from embedding_server.composition import build_pipeline
    from embedding_server.settings import load_settings

    encoder = InProcessEncoder(runner, model_info(model, runner.dimension, store_tag))
    return build_pipeline(model, preparer, encoder, settings or load_settings(), entry)


def stored_entry(directory: Path) -> Any:
    """The ``StoredEntry`` of the store entry in ``directory`` (``<store>/<name>/<version>``,
    as ``tiny_import`` gives it), read through BentoML from that store."""
    import bentoml
    from bentoml._internal.models.model import ModelStore

    from embedding_server.composition import StoredEntry

    store = ModelStore(str(directory.parents[1]))
    return StoredEntry.of(bentoml.models.get(f"{directory.parent.name}:{directory.name}", _model_store=store))


def pipeline_embed(pipeline: Any, item: dict[str, Any]) -> np.ndarray:
    """``pipeline.embed`` of one item, outside any server."""
    from embedding_server.http_api.schemas import EmbeddingRequest

    request = EmbeddingRequest(model=pipeline.model.id, input=item, encoding_format="float")
    return np.asarray(asyncio.run(pipeline.embed(request)))


@contextmanager
def pipeline_overridden(dependency: Callable[..., Any]) -> Iterator[None]:
    """The public app takes its pipeline from ``dependency`` (a FastAPI dependency) inside the
    block, and whatever it took before afterwards. Use the ``use_pipeline`` fixture in tests."""
    from embedding_server.routes import current_pipeline
    from service import app

    before = app.dependency_overrides.get(current_pipeline)
    app.dependency_overrides[current_pipeline] = dependency
    try:
        yield
    finally:
        if before is None:
            app.dependency_overrides.pop(current_pipeline, None)
        else:
            app.dependency_overrides[current_pipeline] = before
