"""OpenVINO backend: an entry's converted encoders (:mod:`runners.backends.openvino_export`) compiled
on the configured device, behind the same :class:`EmbeddingRunner` interface as PyTorch.

The runner takes what the PyTorch runner takes: texts go through the adapter's own text
inputs (the same tokenizer call, trimming included), uint8 pixels go straight into the image
IR, which normalises them as the PyTorch tower does. The Encoder service and its adaptive
batching therefore see no difference.
"""

from __future__ import annotations

import threading
from itertools import pairwise
from pathlib import Path

import numpy as np
import openvino as ov

from runners.backends.openvino_export import IMAGE_IR, TEXT_IR, ir_for_entry
from runners.backends.openvino_int8 import int8_ir, quantised_towers
from runners.contract import (
    PIXELS,
    DeviceUnavailable,
    EmbeddingRunner,
    FamilyAdapter,
    OpenVinoOptions,
    RunnerOptions,
    TextInputs,
)


def check_device(device: str, core: ov.Core | None = None) -> None:
    """Raise :class:`DeviceUnavailable`, listing the devices OpenVINO sees, unless ``device``
    (``CPU``, ``GPU``, ``GPU.<n>`` or ``AUTO``) is usable."""
    if device == "AUTO":
        return
    core = core or ov.Core()
    try:
        core.get_property(device, "FULL_DEVICE_NAME")
    except RuntimeError:
        seen = ", ".join(core.available_devices) or "none"
        raise DeviceUnavailable(
            f"EMBEDDING_DEVICE={device} is not available to OpenVINO; the devices it sees: {seen}"
        ) from None


class CompiledTower:
    """One compiled encoder, called with named arrays, returning features ``(N, dimension)``.

    A batch is split over the infer requests the compiled model asks for (one under the
    LATENCY hint; one per stream under THROUGHPUT), which run in parallel. Calls are
    serialised: the requests' output buffers are reused.
    """

    def __init__(self, compiled: ov.CompiledModel) -> None:
        self.compiled = compiled
        self.dimension = compiled.output(0).get_partial_shape()[-1].get_length()
        self._names = [port.get_any_name() for port in compiled.inputs]
        self._jobs = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._queue = ov.AsyncInferQueue(compiled, self._jobs)
        self._queue.set_callback(self._collect)
        self._parts: list[np.ndarray | None] = []
        self._lock = threading.Lock()

    def _collect(self, request: ov.InferRequest, index: int) -> None:
        self._parts[index] = request.get_output_tensor(0).data.copy()

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        batch = len(inputs[self._names[0]])
        bounds = np.linspace(0, batch, min(self._jobs, batch) + 1).astype(int)
        with self._lock:
            self._parts = [None] * (len(bounds) - 1)
            for index, (start, stop) in enumerate(pairwise(bounds)):
                self._queue.start_async({name: inputs[name][start:stop] for name in self._names}, index)
            self._queue.wait_all()
            return np.concatenate(self._parts)


def _unit_rows(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float32, copy=False)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


class OpenVinoRunner(EmbeddingRunner):
    backend = "openvino"

    def __init__(self, text_inputs: TextInputs, text: CompiledTower, image: CompiledTower | None,
                 quantised: dict[str, bool] | None = None) -> None:
        """``quantised``: which towers of an int8 IR are int8 (``None``: a float IR)."""
        self.text_inputs = text_inputs
        self._text = text
        self._image = image
        self.dimension = text.dimension
        self.device = ",".join(text.compiled.get_property("EXECUTION_DEVICES"))
        self.precision = _precision(text.compiled.get_property("INFERENCE_PRECISION_HINT").to_string(), quantised)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        inputs = {name: tensor.numpy() for name, tensor in self.text_inputs(texts).items()}
        return _unit_rows(self._text(inputs))

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        if self._image is None:
            raise NotImplementedError("this model does not embed images")
        return _unit_rows(self._image({PIXELS: np.ascontiguousarray(pixels)}))


def _precision(float_precision: str, quantised: dict[str, bool] | None) -> str:
    """``int8`` when every tower is, else each tower's (``int8 text, bf16 image``); the
    device's float precision for a float IR."""
    if quantised is None:
        return float_precision
    if all(quantised.values()):
        return "int8"
    return ", ".join(f"{'int8' if int8 else float_precision} {Path(tower).stem}" for tower, int8 in quantised.items())


def load_runner(adapter: FamilyAdapter, entry_dir: Path, tag: str, options: RunnerOptions,
                openvino: OpenVinoOptions) -> OpenVinoRunner:
    """Compile the entry's IR (or its int8 IR) on ``options.device``, converting it first if
    this entry has none yet; a device OpenVINO cannot use fails, listing the ones it sees."""
    core = ov.Core()
    check_device(options.device, core)
    ir = (int8_ir if openvino.int8 else ir_for_entry)(adapter, entry_dir, tag, openvino.cache_dir)

    def compiled(name: str) -> CompiledTower:
        return CompiledTower(core.compile_model(ir / name, options.device, dict(openvino.compile_options)))

    image = compiled(IMAGE_IR) if (ir / IMAGE_IR).is_file() else None
    quantised = quantised_towers(ir) if openvino.int8 else None
    return OpenVinoRunner(adapter.load_text_inputs(entry_dir, options), compiled(TEXT_IR), image, quantised)
