"""Composition: a catalogue model, its store entry and the settings, turned into what serves it.

The one place that wires "model -> adapter -> store entry -> runner / preparer -> ModelInfo",
used by ``service.py``, ``bench/`` and the tests. Settings are read at the top and passed in;
what reaches the runners is plain values (:class:`runners.contract.RunnerOptions`).

The Encoder's side (:func:`load_runner`) imports torch and the engines when called; the entry
service's side (:func:`load_preparer`, :func:`build_pipeline`) imports neither.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from embedding_server.encoder.coalescing import CoalescingEncoder
from embedding_server.encoder.protocol import EncoderClient
from embedding_server.http_api.schemas import ModelInfo
from embedding_server.pipeline import EmbeddingPipeline
from embedding_server.scoring import COSINE_ONLY, Scoring
from embedding_server.settings import Settings
from importer.store import VARIANT_LABEL, WEIGHTS_LABEL
from models.catalogue import CatalogueModel
from runners.contract import DeviceUnavailable, EmbeddingRunner, ImagePreparer, OpenVinoOptions, RunnerOptions


@dataclass(frozen=True)
class StoredEntry:
    """What serving reads of a model-store entry: its files, tag, labels, metadata (what the
    import recorded, such as the scoring parameters) and creation time (Unix seconds)."""

    directory: Path
    tag: str
    labels: Mapping[str, str]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created: int = 0

    @classmethod
    def of(cls, entry: Any) -> StoredEntry:
        """From a ``bentoml.Model``."""
        return cls(Path(entry.path), str(entry.tag), dict(entry.info.labels), dict(entry.info.metadata),
                   int(entry.info.creation_time.timestamp()))


PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Run by a child interpreter: the OpenVINO device check, its message on stderr when it fails.
_DEVICE_CHECK = "import sys; from runners.backends.openvino_backend import check_device; check_device(sys.argv[1])"


def check_openvino_device(device: str) -> None:
    """Stop start-up unless OpenVINO can use ``device``, as the Encoder will ask it to.

    Asked of a child interpreter, so that the processes which only import ``service.py`` (the
    arbiter, the entry workers) never load OpenVINO; the Encoder's own check, when it compiles
    the model, is :func:`runners.backends.openvino_backend.check_device` itself."""
    checked = subprocess.run([sys.executable, "-c", _DEVICE_CHECK, device], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=300)
    if checked.returncode != 0:
        lines = checked.stderr.strip().splitlines() or [f"the OpenVINO device check exited with {checked.returncode}"]
        raise DeviceUnavailable(lines[-1].split(": ", 1)[-1])


def runner_options(settings: Settings) -> RunnerOptions:
    return RunnerOptions(device=settings.device, text_token_cap=settings.text_token_cap,
                         text_token_budget=settings.text_token_budget)


def openvino_options(settings: Settings) -> OpenVinoOptions:
    """OpenVINO properties from the ``EMBEDDING_OV_*`` settings (unset ones: OpenVINO's own)
    and ``EMBEDDING_PRECISION``: ``exact`` asks for f32, ``fast`` and ``int8`` leave the
    float precision to OpenVINO (bf16 on CPUs with native bf16, f16 on GPUs, else f32)."""
    options: dict[str, Any] = {"PERFORMANCE_HINT": settings.ov_performance_hint}
    if settings.ov_num_streams is not None:
        options["NUM_STREAMS"] = settings.ov_num_streams
    if settings.ov_inference_threads is not None:
        options["INFERENCE_NUM_THREADS"] = settings.ov_inference_threads
    if settings.precision == "exact":
        options["INFERENCE_PRECISION_HINT"] = "f32"
    return OpenVinoOptions(compile_options=options, cache_dir=settings.ov_cache_dir, int8=settings.precision == "int8")


def load_runner(model: CatalogueModel, entry: StoredEntry, settings: Settings) -> EmbeddingRunner:
    """The Encoder's runner: OpenVINO (``EMBEDDING_USE_OV``, converting the entry's encoders
    on its first start) or PyTorch, at ``EMBEDDING_PRECISION`` (for PyTorch a process-wide
    math mode, :mod:`runners.backends.torch_precision`), on the CPU as concurrent slices where
    that helps (:mod:`runners.backends.cpu_lanes`)."""
    import torch

    from runners.backends import cpu_lanes, torch_precision
    from runners.backends.devices import torch_device

    if settings.torch_threads:  # 0 keeps PyTorch's default: one thread per core
        torch.set_num_threads(settings.torch_threads)
    options = runner_options(settings)
    if settings.use_ov:
        from runners.backends import openvino_backend

        return openvino_backend.load_runner(model.adapter, entry.directory, entry.tag, options,
                                            openvino_options(settings))
    runner = model.adapter.load_runner(entry.directory, options)
    runner.precision = torch_precision.apply(settings.precision, torch_device(settings.device))
    return cpu_lanes.sliced_on_cpu(runner, settings.device, settings.torch_lanes, torch.get_num_threads())


def model_info(model: CatalogueModel, runner: EmbeddingRunner, entry: StoredEntry, device: str) -> ModelInfo:
    """What the Encoder reports about the model it serves (``device``: the configured one,
    unless the runner resolved its own)."""
    return ModelInfo(
        id=model.id,
        dimension=runner.dimension,
        modalities=list(model.modalities),
        image_size=model.image_size,
        context_length=model.context_length,
        device=runner.device or device,
        backend=runner.backend,
        precision=runner.precision,
        weights=entry.labels.get(WEIGHTS_LABEL, "pretrained"),
        variant=entry.labels.get(VARIANT_LABEL, "full"),
        store_tag=entry.tag,
    )


def warm_up(runner: EmbeddingRunner, preparer: ImagePreparer | None, image_size: int) -> dict[str, float]:
    """One forward pass per modality the model embeds (``preparer``: its images, ``None`` for a
    text-only model), so that the first request does not pay for what a first pass sets up:
    weights paged in, kernels chosen and compiled, OpenVINO's first inference. The Encoder runs
    it in ``__init__``, before it answers anything, so ``/health`` is not healthy until it is
    done. Returns the seconds each pass took, by modality."""
    seconds = {}
    started = time.perf_counter()
    runner.encode_text(["warm-up"])
    seconds["text"] = time.perf_counter() - started
    if preparer is not None:
        pixels = preparer(Image.new("RGB", (image_size, image_size), (128, 128, 128)))[np.newaxis]
        started = time.perf_counter()
        runner.encode_images(pixels)
        seconds["image"] = time.perf_counter() - started
    return seconds


def load_preparer(model: CatalogueModel, entry_dir: Path) -> ImagePreparer | None:
    """The entry service's image preparer (Pillow and numpy), ``None`` for text-only models."""
    return model.adapter.load_image_preparer(entry_dir) if model.supports_images else None


def build_pipeline(model: CatalogueModel, preparer: ImagePreparer | None, encoder: EncoderClient,
                   settings: Settings, entry: StoredEntry | None = None) -> EmbeddingPipeline:
    """The entry service's pipeline (``preparer``: :func:`load_preparer`) of the store ``entry``
    (its scoring and creation time; none: cosine only): concurrent requests share ``encoder``
    calls (one in flight per kind, :mod:`embedding_server.encoder.coalescing`)."""
    scoring, created = (Scoring.of_entry(entry.metadata), entry.created) if entry else (COSINE_ONLY, 0)
    return EmbeddingPipeline(model, CoalescingEncoder(encoder, settings), preparer, settings, scoring, created)
