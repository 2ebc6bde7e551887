"""Conversion of a store entry's encoders to OpenVINO IR, once per entry.

The IR of an entry lives in one of two places:

* inside the entry, ``openvino/``: written by ``python -m models import ... --openvino``; it
  travels with the entry into bentos and containers, which then start without converting;
* for entries imported without it, in a cache directory keyed by the entry's tag
  (``<cache>/<name>/<version>/``), written by the first start with ``EMBEDDING_USE_OV=true``.
  A new import is a new version, so a stale IR is never used.

Each tower (:mod:`runners.backends.towers`) goes through ``torch.export`` and
``openvino.convert_model`` (TorchScript tracing trips over the fast paths of recent
open_clip/torch versions), with a dynamic batch dimension, and a dynamic sequence length
where the family's tokenisation varies it; every other dimension is fixed to the example's.
Weights stay float32 in the IR: bf16 and f16 are compile-time choices, and int8 is a
quantised copy of this IR (:mod:`runners.backends.openvino_int8`).
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import openvino as ov
import torch
from PIL import Image

from runners.backends.towers import Tower
from runners.contract import PIXELS, FamilyAdapter, TextInputs

logger = logging.getLogger(__name__)

IR_DIR = "openvino"
TEXT_IR = "text.xml"
IMAGE_IR = "image.xml"
# Two texts of different lengths, neither of them one token nor the full context, so that
# torch.export does not specialise the batch or sequence dimension to a constant.
EXAMPLE_TEXTS = ["a photo of a cat", "a diagram of the gears inside a mechanical watch"]
EXAMPLE_IMAGE = Image.new("RGB", (320, 240), (128, 96, 64))


def has_ir(directory: Path) -> bool:
    return (directory / TEXT_IR).is_file()


def default_cache_root() -> Path:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get()) / IR_DIR


def ir_for_entry(adapter: FamilyAdapter, entry_dir: Path, tag: str, cache_root: Path | None = None) -> Path:
    """The directory holding the entry's IR: the entry's own, else the cache's, converting
    into the cache first when it has none for this tag (``name:version``)."""
    if has_ir(entry_dir / IR_DIR):
        return entry_dir / IR_DIR
    cached = cache_dir_for(tag, cache_root)
    if not has_ir(cached):
        convert_entry(adapter, entry_dir, cached)
    return cached


def cache_dir_for(tag: str, cache_root: Path | None = None) -> Path:
    """Where the cache keeps the IR of the entry tagged ``name:version``."""
    name, version = tag.split(":", 1)
    return (cache_root or default_cache_root()) / name / version


def convert_entry(adapter: FamilyAdapter, entry_dir: Path, target: Path) -> None:
    """Write the IR of the entry at ``entry_dir`` into ``target`` (which must not exist yet)."""
    logger.info("Converting %s to OpenVINO IR in %s (once per entry)", entry_dir, target)
    write_at_once(target, lambda directory: _write_ir(adapter, entry_dir, directory))


def write_at_once(target: Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` on a scratch directory beside ``target`` and rename it to ``target``, so
    a reader never sees half an IR, and of two processes writing the same IR the first one
    wins."""
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        scratch.chmod(0o755)  # readable like the entry's other files, not mkdtemp's owner-only
        write(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not has_ir(target):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        gc.collect()  # the models used to write it are garbage now; give their memory back
    logger.info("Wrote %s in %.1f s", target, time.monotonic() - started)


def _write_ir(adapter: FamilyAdapter, entry_dir: Path, directory: Path) -> None:
    towers = adapter.load_runner(entry_dir).towers()
    text_inputs = adapter.load_text_inputs(entry_dir)
    example = text_inputs(EXAMPLE_TEXTS)
    save(_convert(towers.text, example, _length_varies(text_inputs, example)), directory / TEXT_IR)
    if towers.image is not None:
        prepare = adapter.load_image_preparer(entry_dir)
        pixels = torch.from_numpy(np.stack([prepare(EXAMPLE_IMAGE)] * 2))
        save(_convert(towers.image, {PIXELS: pixels}, vary_length=False), directory / IMAGE_IR)


def _length_varies(text_inputs: TextInputs, example: dict[str, torch.Tensor]) -> bool:
    """Whether the family's tokenisation gives batches of different lengths (padding to the
    longest text, trimming) rather than always its fixed context."""
    name = next(iter(example))
    return text_inputs(["a"])[name].shape[1] != example[name].shape[1]


def _convert(tower: Tower, example: dict[str, torch.Tensor], vary_length: bool) -> ov.Model:
    def dynamic_dims(tensor: torch.Tensor) -> dict[int, torch.export.Dim]:
        dims = {0: torch.export.Dim.DYNAMIC}
        if vary_length and tensor.dim() > 1:
            dims[1] = torch.export.Dim.DYNAMIC
        return dims

    dynamic = {name: dynamic_dims(tensor) for name, tensor in example.items()}
    with torch.no_grad():
        # Shape guards (such as CLIP's causal-mask slice, which differs at the full context)
        # become runtime asserts in the graph: OpenVINO's converter cannot run the guard
        # function that torch.export would otherwise add.
        program = torch.export.export(tower.eval(), (), kwargs=example, dynamic_shapes=dynamic,
                                      prefer_deferred_runtime_asserts_over_guards=True)
    model = ov.convert_model(program)
    model.reshape({model.input(name): ov.PartialShape([-1 if axis in dynamic[name] else size
                                                       for axis, size in enumerate(tensor.shape)])
                   for name, tensor in example.items() if name in _input_names(model)})
    return model


def _input_names(model: ov.Model) -> set[str]:
    return {name for port in model.inputs for name in port.get_names()}


def save(model: ov.Model, path: Path) -> None:
    ov.save_model(model, path, compress_to_fp16=False)
