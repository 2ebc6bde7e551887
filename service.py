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
from pydantic import BaseModel, ConfigDict

from embedding_server import composition, jobs
from embedding_server.encoder.client import EncoderConnection
from embedding_server.encoder.failed_rows import embed_isolating
from embedding_server.http_api import request_timeout
from embedding_server.media.local_files import check_video_roots
from embedding_server.app import build_app
from embedding_server.settings import ENV_PREFIX, Settings, get_settings
from importer.store import find_entry, store_tag
from models.catalogue import find_model

logger = logging.getLogger(__name__)


class BuildArguments(BaseModel):
    """``--arg`` values of ``bentoml build`` and ``bentoml serve``. A Bento records those it
    was built with (``args`` in its bento.yaml) and BentoML restores them, in place of any
    given to ``bentoml serve``, whenever it serves that Bento."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # the catalogue model to serve, instead of EMBEDDING_MODEL_NAME


class ModelMismatch(RuntimeError):
    """EMBEDDING_MODEL_NAME and ``--arg model`` name different models. Not a ``ValueError``:
    BentoML's loader takes one raised while it loads a Bento by tag for "not a Bento tag" and
    reports a failed module import instead (bentoml/_internal/service/loader.py)."""


def with_model_argument(settings: Settings, arguments: BuildArguments) -> Settings:
    """``settings`` naming the model of ``--arg model`` when there is one. An
    EMBEDDING_MODEL_NAME naming another model stops start-up: a Bento holds only the model
    it was built for."""
    if arguments.model is None:
        return settings
    model = find_model(arguments.model)
    if "model_name" in settings.model_fields_set and find_model(settings.model_name).id != model.id:
        raise ModelMismatch(
            f"EMBEDDING_MODEL_NAME={settings.model_name} differs from the build argument model={arguments.model} "
            f"(bentoml build/serve --arg model=...): unset EMBEDDING_MODEL_NAME to serve {model.id}, "
            f"or build a Bento with --arg model={settings.model_name}")
    return settings.model_copy(update={"model_name": model.id})


settings = with_model_argument(get_settings(), bentoml.use_arguments(BuildArguments))
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

# What each service asks of its machine (BentoCloud sizes its instances by these; BentoML
# itself acts on "gpu" only). The Kubernetes manifests in deploy/ request the same.
ENCODER_RESOURCES: dict[str, Any] = {"cpu": "4", "memory": "8Gi"}
ENTRY_RESOURCES: dict[str, Any] = {"cpu": "2", "memory": "2Gi"}
# Requests in flight per replica above which BentoCloud adds a replica of that service
# (BentoML itself ignores traffic.concurrency). The Encoder's are coalesced calls, several
# requests each.
ENCODER_CONCURRENCY = 32
ENTRY_CONCURRENCY = 64
# Settings a deployment may change, declared with their defaults. Settings without a default
# (EMBEDDING_API_KEYS, the host and origin lists) are left out, as BentoML refuses to start
# when a declared variable has no value and is unset; so is EMBEDDING_MODEL_NAME, which a
# Bento takes from its build argument.
DEPLOYMENT_SETTINGS = ("device", "use_ov", "precision", "entry_workers", "max_concurrency", "request_timeout_s",
                       "max_latency_ms", "torch_threads", "torch_lanes")


def encoder_resources(settings: Settings) -> dict[str, Any]:
    """The Encoder's resources, with one GPU when PyTorch runs on ``GPU``. BentoML then sets
    ``CUDA_VISIBLE_DEVICES`` for the Encoder; ``GPU.<n>`` picks a device of a multi-GPU machine
    itself, which that would hide, and OpenVINO's GPU is not a CUDA device."""
    if settings.device == "GPU" and not settings.use_ov:
        return {**ENCODER_RESOURCES, "gpu": 1}
    return dict(ENCODER_RESOURCES)


def deployment_envs(settings: Settings) -> list[dict[str, str]]:
    """``DEPLOYMENT_SETTINGS`` as BentoML ``envs``, valued as ``settings`` has them: a Bento
    built with ``EMBEDDING_DEVICE=GPU`` declares a GPU for its Encoder, and its image must then
    say GPU too (the Dockerfile turns these values into ``ENV`` lines), not the default CPU."""
    def text(value: object) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    return [{"name": f"{ENV_PREFIX}{name.upper()}", "value": text(getattr(settings, name))}
            for name in DEPLOYMENT_SETTINGS]


@bentoml.service(
    name="encoder",
    workers=1,
    resources=encoder_resources(settings),
    runner_connection=DEPENDENCY_CONNECTION,
    traffic={"timeout": settings.request_timeout_s, "concurrency": ENCODER_CONCURRENCY},
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
    resources=ENTRY_RESOURCES,
    # On the entry only: BentoML gives a dependency's declared value precedence over the
    # environment, while the entry's take the environment first and reach the Encoder too.
    envs=deployment_envs(settings),
    http={"port": settings.server_port},
    # No traffic.max_concurrency: the app's ConcurrencyLimitMiddleware answers 429 with a
    # "detail" body and limits /embeddings only, so /health stays answerable under load.
    traffic={"timeout": settings.request_timeout_s, "concurrency": ENTRY_CONCURRENCY},
)
@bentoml.asgi_app(app, path="/")
class EmbeddingService:
    """Public API; decodes and preprocesses media so only compact arrays reach the Encoder."""

    encoder = bentoml.depends(Encoder)

    def __init__(self) -> None:
        entry = composition.StoredEntry.of(ENTRY)
        preparer = composition.load_preparer(MODEL, entry.directory)
        self.pipeline = composition.build_pipeline(MODEL, preparer, EncoderConnection(self.encoder), settings, entry)

    @bentoml.task(route=jobs.JOB_ROUTE)
    async def embeddings_job(self, model: str, input: dict[str, Any], encoding_format: str,
                             ctx: bentoml.Context) -> Any:
        """``POST /embeddings`` as a background job, free of the request time-out (README,
        "Background jobs"). Its body was checked at submit (embedding_server/jobs.py); the
        answer, vectors or error, is that route's response, which BentoML stores for ``get``."""
        fields = {"model": model, "input": input, "encoding_format": encoding_format}
        return await jobs.run_job(self.pipeline, fields, ctx)


# BentoML serves the task's routes outside the mounted app: they get its keys and limits here.
EmbeddingService.add_asgi_middleware(jobs.JobRoutes, settings=settings)
