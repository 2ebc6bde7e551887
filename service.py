"""BentoML services: ``EmbeddingService`` (public HTTP API) and ``Encoder`` (model worker).

``bentoml serve`` starts both; the Encoder is reached through ``bentoml.depends``. Concurrent
requests are merged into shared Encoder calls by the entry's coalescer
(embedding_server/coalescing.py); the Encoder's adaptive batching (``batchable=True``) can
merge the calls of several entry workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import torch

from embedding_server import request_timeout
from embedding_server.api import app
from embedding_server.coalescing import CoalescingEncoder
from embedding_server.encoder_client import EncoderConnection
from embedding_server.failed_rows import embed_isolating
from embedding_server.media.local_files import check_video_roots
from embedding_server.pipeline import EmbeddingPipeline
from embedding_server.schemas import ModelInfo
from embedding_server.settings import get_settings
from models.catalogue import find_model
from models.store import VARIANT_LABEL, WEIGHTS_LABEL, find_entry, store_tag
from runners import adapter_for, openvino_backend
from runners.cpu_lanes import sliced_on_cpu

settings = get_settings()
check_video_roots(settings)  # a symlinked or world-writable video root stops start-up
MODEL = find_model(settings.model_name)
ADAPTER = adapter_for(MODEL)
if settings.use_ov:
    openvino_backend.check_device(settings.device)  # lists the devices OpenVINO sees otherwise
ENTRY = find_entry(MODEL)  # fails start-up with the import command when the model is missing

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
        entry = self.model_ref
        if settings.torch_threads:  # 0 keeps PyTorch's default: one thread per core
            torch.set_num_threads(settings.torch_threads)
        if settings.use_ov:  # converts the entry's encoders on its first start (see README)
            self.runner = openvino_backend.load_runner(ADAPTER, Path(entry.path), str(entry.tag), settings)
        else:
            self.runner = sliced_on_cpu(ADAPTER.load_runner(Path(entry.path), settings.device),
                                        settings.device, settings.torch_lanes, torch.get_num_threads())
        self.model_info = ModelInfo(
            id=MODEL.id,
            dimension=self.runner.dimension,
            modalities=list(MODEL.modalities),
            image_size=MODEL.image_size,
            context_length=MODEL.context_length,
            device=self.runner.device or settings.device,
            backend=self.runner.backend,
            weights=entry.info.labels.get(WEIGHTS_LABEL, "pretrained"),
            variant=entry.info.labels.get(VARIANT_LABEL, "full"),
            store_tag=str(entry.tag),
        )

    # A batch merges several callers' items: an item the model fails on comes back as a NaN
    # row instead of failing the whole batch (embedding_server/failed_rows.py).
    @bentoml.api(batchable=True, max_batch_size=settings.text_max_batch_size,
                 max_latency_ms=settings.max_latency_ms)
    def encode_text(self, texts: list[str]) -> np.ndarray:
        return embed_isolating(self.runner.encode_text, texts, self.runner.dimension)

    @bentoml.api(batchable=True, max_batch_size=settings.image_max_batch_size,
                 max_latency_ms=settings.max_latency_ms)
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return embed_isolating(self.runner.encode_images, pixels, self.runner.dimension)

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
        preparer = ADAPTER.load_image_preparer(Path(ENTRY.path)) if MODEL.supports_images else None
        # Concurrent requests share Encoder calls (one in flight per modality): see coalescing.py.
        encoder = CoalescingEncoder(EncoderConnection(self.encoder), settings)
        self.pipeline = EmbeddingPipeline(MODEL, encoder, preparer, settings)
