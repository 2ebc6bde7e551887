"""BentoML services: ``EmbeddingService`` (public HTTP API) and ``Encoder`` (model worker).

``bentoml serve`` starts both; the Encoder is reached through ``bentoml.depends``. Concurrent
requests are merged into shared Encoder calls by the entry's coalescer
(embedding_server/encoder/coalescing.py); the Encoder's adaptive batching
(``batchable=True``) can merge the calls of several entry workers.

This module is the top: it reads the settings once and passes them down
(embedding_server/composition.py wires the rest). Every worker process imports it, so it
imports no engine: torch and the model's libraries load in the Encoder's ``__init__`` only.
"""

from __future__ import annotations

import logging
from typing import Any

import bentoml
import numpy as np

from embedding_server import composition
from embedding_server.encoder.client import EncoderConnection
from embedding_server.encoder.failed_rows import embed_isolating
from embedding_server.http_api import request_timeout
from embedding_server.media.local_files import check_video_roots
from embedding_server.app import build_app
from embedding_server.settings import get_settings
from importer.store import find_entry, store_tag
from models.catalogue import find_model

logger = logging.getLogger(__name__)
settings = get_settings()
check_video_roots(settings)  # a symlinked or world-writable video root stops start-up
MODEL = find_model(settings.model_name)
if settings.use_ov:
    composition.check_openvino_device(settings.device)  # lists the devices OpenVINO sees otherwise
ENTRY = find_entry(MODEL)  # fails start-up with the import command when the model is missing
app = build_app(settings)

# Raised limits on the callee work around BentoML 1.4.31-1.4.40 recycling the caller's
# aiohttp session under load ("Connector is closed" above ~100 concurrent calls).
DEPENDENCY_CONNECTION = {"max_requests": 1_000_000_000, "max_age": 1e9}
# traffic.timeout without BentoML's per-request timer leak, answering 504 with a "detail".
request_timeout.install()


@bentoml.service(
    name="encoder",
    workers=1,
    runner_connection=DEPENDENCY_CONNECTION,
    traffic={"timeout": settings.request_timeout_s},
)
class Encoder:
    """Loads the model once and runs batched forward passes."""

    model_ref = bentoml.models.BentoModel(store_tag(MODEL))

    def __init__(self) -> None:
        entry = composition.StoredEntry.of(self.model_ref)
        self.runner = composition.load_runner(MODEL, entry, settings)
        self.model_info = composition.model_info(MODEL, self.runner, entry, settings.device)
        warmed = composition.warm_up(self.runner, composition.load_preparer(MODEL, entry.directory),
                                     MODEL.image_size or 0)
        logger.info("warm-up passes: %s", ", ".join(f"{kind} {1000 * s:.0f} ms" for kind, s in warmed.items()))

    # A batch merges several callers' items: an item the model fails on comes back as a NaN
    # row instead of failing the whole batch (embedding_server/encoder/failed_rows.py).
    @bentoml.api(batchable=True, max_batch_size=settings.text_max_batch_size,
                 max_latency_ms=settings.max_latency_ms)
    def encode_text(self, texts: list[str]) -> np.ndarray:
        return embed_isolating(self.runner.encode_text, texts, self.runner.dimension)

    @bentoml.api(batchable=True, max_batch_size=settings.image_max_batch_size,
                 max_latency_ms=settings.max_latency_ms)
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return embed_isolating(self.runner.encode_images, pixels, self.runner.dimension)

    @bentoml.api
    def count_tokens(self, texts: list[str]) -> np.ndarray:
        """Tokens the model sees of each text (the OpenAI-compatible usage figures): the
        tokenizer alone, in a worker thread, beside the forward passes."""
        return np.asarray(self.runner.count_tokens(texts), dtype=np.int64)

    @bentoml.api
    async def info(self) -> dict[str, Any]:
        """Answered on the event loop, so it stays fast while a batch is computing."""
        return self.model_info.model_dump()


@bentoml.service(
    name="embedding_service",
    workers=settings.entry_workers,
    http={"port": settings.server_port},
    # No traffic.max_concurrency: the app's ConcurrencyLimitMiddleware answers 429 with a
    # "detail" body and limits /embeddings only, so /health stays answerable under load.
    traffic={"timeout": settings.request_timeout_s},
)
@bentoml.asgi_app(app, path="/")
class EmbeddingService:
    """Public API; decodes and preprocesses media so only compact arrays reach the Encoder."""

    encoder = bentoml.depends(Encoder)

    def __init__(self) -> None:
        entry = composition.StoredEntry.of(ENTRY)
        preparer = composition.load_preparer(MODEL, entry.directory)
        self.pipeline = composition.build_pipeline(MODEL, preparer, EncoderConnection(self.encoder), settings, entry)
