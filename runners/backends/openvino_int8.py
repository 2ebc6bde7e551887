"""``EMBEDDING_PRECISION=int8`` on OpenVINO: an entry's IR quantised to int8 by NNCF, once.

Post-training static quantisation (``nncf.quantize``, transformer preset: SmoothQuant, and
the attention's softmax and the normalisations kept in floating point) turns the matmuls
and convolutions into int8 ones, which CPUs with VNNI or AMX-INT8 compute at several times
the float32 rate. Weight-only compression would keep the float compute and not be faster
for encoders, whose cost is compute rather than weight traffic.

The activation ranges come from a calibration set built here from the family's own text
inputs and image preparer: varied captions in several languages (:data:`CALIBRATION_TEXTS`)
and procedurally drawn images (gradients, noise, shapes), as no photographs ship with the
server. Each quantised tower is checked against the float one on inputs the calibration
did not see, and kept in float where quantisation broke it (:data:`MIN_COSINE`);
bench/RESULTS.md ("Precision") measures the fidelity to float32 this gives. The quantised
IR is cached beside the float one (``<cache>/<name>/<version>-int8``); like the float IR it
is written once per entry.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import openvino as ov
from PIL import Image, ImageDraw

from runners.backends.openvino_export import IMAGE_IR, TEXT_IR, cache_dir_for, has_ir, ir_for_entry, save, write_at_once
from runners.contract import PIXELS, FamilyAdapter

logger = logging.getLogger(__name__)

INT8_SUFFIX = "-int8"
TOWERS_FILE = "towers.json"
# Below this cosine to float32 on held-out inputs a tower's quantisation is taken as broken
# (seen: MobileCLIP-S0's convolutional image tower) and the tower stays float. A guard against
# failure, not the quality bar: bench/RESULTS.md ("Precision") measures the fidelity kept.
MIN_COSINE = 0.98
CALIBRATION_IMAGES = 64
HELD_OUT_IMAGES = 16
CALIBRATION_SEED = 20261201
CALIBRATION_TEXTS = (
    "a photo of a cat", "a dog running on the beach", "two children playing football in a park",
    "a red car parked in front of a house", "an old man with a hat reading a newspaper",
    "a crowded street market at night", "the kitchen counter with fresh vegetables",
    "a diagram of the gears inside a mechanical watch", "snow-covered mountains under a blue sky",
    "a bowl of ramen with an egg", "a plane taking off at sunset", "an empty office with rows of desks",
    "close-up of a bee on a yellow flower", "a screenshot of a spreadsheet with quarterly earnings",
    "handwritten notes on lined paper", "a cyclist in the rain", "a wedding party dancing",
    "satellite image of a river delta", "a cartoon of a smiling sun", "a microscope image of cells",
    "black and white portrait of a woman", "a stack of books on a wooden table",
    "fireworks over the harbour", "a traffic jam on a highway", "a kitten sleeping in a basket",
    "the logo of a coffee shop", "a chessboard in the middle of a game", "a goalkeeper diving for the ball",
    "a lighthouse on a rocky coast during a storm", "a bar chart of population growth",
    "How do I reset my password?", "Quarterly revenue rose by 12 percent compared with last year.",
    "The patient reported mild headaches after the second dose.", "def main(): return 0",
    "Ein Hund spielt im Garten mit einem Ball.", "Un chat noir dort sur le canapé.",
    "一只猫坐在窗台上", "城市夜景和高楼大厦", "東京の街並みと桜", "Собака бежит по снегу",
    "¿Dónde está la estación de tren?", "a", "photo", "1920s jazz band on a small stage",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "A long description of a complex scene: a busy train station during rush hour, people with "
    "suitcases, a clock showing five past eight, pigeons on the floor and a musician playing the violin.",
    "!!!", "www.example.com/search?q=embedding",
)


def int8_ir(adapter: FamilyAdapter, entry_dir: Path, tag: str, cache_root: Path | None = None) -> Path:
    """The directory holding the entry's int8 IR, quantising its float IR into the cache
    first when there is none for this tag."""
    cached = cache_dir_for(tag, cache_root)
    target = cached.with_name(cached.name + INT8_SUFFIX)
    if not has_ir(target):
        source = ir_for_entry(adapter, entry_dir, tag, cache_root)
        logger.info("Quantising %s to int8 in %s (once per entry)", source, target)
        write_at_once(target, lambda directory: _write_int8(adapter, entry_dir, source, directory))
    return target


def quantised_towers(directory: Path) -> dict[str, bool]:
    """Which towers of an int8 IR directory are quantised (``text.xml``: True); a tower whose
    quantisation failed the fidelity check is kept in float."""
    return json.loads((directory / TOWERS_FILE).read_text())


def _write_int8(adapter: FamilyAdapter, entry_dir: Path, source: Path, directory: Path) -> None:
    text_inputs = adapter.load_text_inputs(entry_dir)

    def tokens(texts: list[str]) -> list[dict[str, np.ndarray]]:
        return [{name: tensor.numpy() for name, tensor in text_inputs([text]).items()} for text in texts]

    # All captions in one text too: long-context families see long sequences as well.
    towers = {TEXT_IR: _quantise(source / TEXT_IR, tokens([*CALIBRATION_TEXTS, " ".join(CALIBRATION_TEXTS)]),
                                 tokens(held_out_texts()), directory / TEXT_IR)}
    if (source / IMAGE_IR).is_file():
        prepare = adapter.load_image_preparer(entry_dir)

        def pixels(images: list[Image.Image]) -> list[dict[str, np.ndarray]]:
            return [{PIXELS: prepare(image)[np.newaxis]} for image in images]

        towers[IMAGE_IR] = _quantise(source / IMAGE_IR, pixels(calibration_images()),
                                     pixels(calibration_images(HELD_OUT_IMAGES, CALIBRATION_SEED + 1)),
                                     directory / IMAGE_IR)
    (directory / TOWERS_FILE).write_text(json.dumps(towers))


def _quantise(source: Path, samples: list[dict[str, np.ndarray]], held_out: list[dict[str, np.ndarray]],
              target: Path) -> bool:
    """Save the quantised ``source`` as ``target`` and return True, unless its vectors of the
    ``held_out`` inputs fall below :data:`MIN_COSINE` of float32's: then save ``source``
    itself (computed in the device's float precision) and return False."""
    import nncf  # the conversion's dependency only: serving an int8 IR does not need it

    core = ov.Core()
    model = core.read_model(source)
    names = {name for port in model.inputs for name in port.get_names()}

    def dataset(inputs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return [{name: array for name, array in sample.items() if name in names} for sample in inputs]

    quantised = nncf.quantize(model, nncf.Dataset(dataset(samples)), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(samples))
    reference = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    compiled = core.compile_model(quantised, "CPU")
    cosine = min(_cosine(reference(sample)[0], compiled(sample)[0]) for sample in dataset(held_out))
    kept = cosine >= MIN_COSINE
    if not kept:
        logger.warning("int8 %s: smallest cosine to float32 %.3f on held-out inputs (< %.2f); this tower stays float",
                       source.name, cosine, MIN_COSINE)
    save(quantised if kept else model, target)
    return kept


def _cosine(first: np.ndarray, second: np.ndarray) -> float:
    first, second = first.ravel(), second.ravel()
    return float(first @ second / max(np.linalg.norm(first) * np.linalg.norm(second), 1e-12))


def held_out_texts() -> list[str]:
    """Texts the calibration did not see: its captions paired up differently."""
    return [f"{first} {second}" for first, second in zip(CALIBRATION_TEXTS[::2], CALIBRATION_TEXTS[1::2][::-1])]


def calibration_images(count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> list[Image.Image]:
    """``count`` varied RGB images, the same for a given seed: gradients, noise and shapes of
    random colours, in landscape, portrait and square sizes."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = [(320, 240), (240, 320), (256, 256), (640, 360)][index % 4]
        ramp = np.linspace(0, 1, width)[np.newaxis, :, np.newaxis] * rng.uniform(0, 255, 3)
        base = ramp + np.linspace(0, 1, height)[:, np.newaxis, np.newaxis] * rng.uniform(0, 255, 3)
        noisy = base / 2 + rng.normal(0, rng.uniform(0, 60), (height, width, 3))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(0, 12))):
            box = sorted(rng.uniform(0, width, 2)) + sorted(rng.uniform(0, height, 2))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((box[0], box[2], box[1], box[3]), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        images.append(image)
    return images
