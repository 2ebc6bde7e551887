"""The entry's Pillow-and-numpy image preparers against the transforms they reproduce.

For the Hugging Face families (CN-CLIP, BLIP-2) the preparer re-does torchvision's
antialiased uint8 resize in numpy (runners/preparers/resizing.py); for open_clip and
MobileCLIP it calls PIL as torchvision does. Measured in one run, interleaved, as ratios:

* ``resize``: ``resize_uint8_antialiased`` against torchvision's ``resize`` on the uint8
  tensor, bicubic, to the shorter side 224, from a photo-sized source of each size;
* ``CN-CLIP preparer``: the whole preparer (RGB conversion, resize, centre crop) against the
  ``ChineseCLIPImageProcessor`` call the entry made before, without rescaling or normalising;
* ``CLIP preparer``: the open_clip-geometry preparer against open_clip's own transform cut
  before its tensor conversion.

Each cell is the best of ``--repeats`` timings of one call (single-threaded: torch is set to
one thread, the numpy products stay on the calling thread), and every pair is first checked
to give identical pixels.

    .venv/bin/python bench/preparers.py                      # prints the section
    .venv/bin/python bench/preparers.py --write              # and writes it to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from machine import cpu_description
from results_file import RESULTS, command_line, publish, section_head

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADING = "## Entry image preparers"
SOURCES = {"640x480": (640, 480), "1920x1080": (1920, 1080), "4032x3024": (4032, 3024), "8000x6000": (8000, 6000)}


def photo(width: int, height: int) -> Image.Image:
    """Smooth colour gradients with fine noise: a photo's mix of flat and detailed areas."""
    rng = np.random.default_rng(width * height)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    return Image.fromarray(np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8))


def best_ms(call: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return 1000 * min(timings)


def pair(ours: Callable[[], np.ndarray], theirs: Callable[[], np.ndarray], repeats: int) -> tuple[float, float]:
    """Both timings, after checking that both give the same pixels."""
    np.testing.assert_array_equal(ours(), theirs())
    ours_ms = theirs_ms = float("inf")
    for _ in range(repeats):  # interleaved, so both see the same machine
        ours_ms = min(ours_ms, best_ms(ours, 1))
        theirs_ms = min(theirs_ms, best_ms(theirs, 1))
    return ours_ms, theirs_ms


def measure(repeats: int) -> list[tuple[str, str, float, float]]:
    import open_clip
    import torch
    from open_clip.transform import MaybeToTensor, PreprocessCfg, image_transform_v2
    from torchvision.transforms import Compose, InterpolationMode
    from torchvision.transforms.v2 import functional as tvF
    from transformers import AutoImageProcessor, ChineseCLIPImageProcessor

    from runners.entry_files import read_json
    from runners.preparers.centre_crop_guard import guarded_preparer
    from runners.preparers.geometry import geometry_from_hf_processor, geometry_from_open_clip
    from runners.preparers.resizing import resize_uint8_antialiased

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        ChineseCLIPImageProcessor().save_pretrained(directory)
        processor = AutoImageProcessor.from_pretrained(directory)
        cn_clip = guarded_preparer(geometry_from_hf_processor(read_json(Path(directory) / "preprocessor_config.json")))
    preprocess = {"size": 224, "interpolation": "bicubic", "resize_mode": "shortest",
                  "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD}
    steps = image_transform_v2(PreprocessCfg(**preprocess), is_train=False).transforms
    clip_transform = Compose(steps[:next(i for i, step in enumerate(steps) if isinstance(step, MaybeToTensor))])
    clip = guarded_preparer(geometry_from_open_clip(preprocess))

    rows = []
    for name, (width, height) in SOURCES.items():
        image = photo(width, height)
        pixels = np.asarray(image)
        target = (224, round(224 * width / height))
        tensor = torch.from_numpy(pixels).permute(2, 0, 1)
        rows.append((name, "resize", *pair(
            lambda: resize_uint8_antialiased(pixels, target, Image.Resampling.BICUBIC),
            lambda: tvF.resize(tensor, list(target), InterpolationMode.BICUBIC, antialias=True).permute(1, 2, 0).numpy(),
            repeats)))
        rows.append((name, "CN-CLIP preparer", *pair(
            lambda: cn_clip(image),
            lambda: np.asarray(processor(image, do_rescale=False, do_normalize=False, return_tensors="np")
                               ["pixel_values"][0], dtype=np.uint8).transpose(1, 2, 0),
            repeats)))
        rows.append((name, "CLIP preparer", *pair(lambda: clip(image), lambda: np.asarray(clip_transform(image)), repeats)))
    return rows


def section(rows: list[tuple[str, str, float, float]], command: str) -> str:
    import torch

    machine = f"{cpu_description()}, Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    lines = section_head(HEADING, command, machine) + [
        "- Each pair gave identical pixels; times are the best single-threaded call, the two interleaved.",
        "",
        "| source | what | ours (ms) | reference (ms) | ours / reference |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [f"| {source} | {what} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} |"
              for source, what, ours, theirs in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per cell; the best is kept")
    parser.add_argument("--write", action="store_true", help=f"write the section to {RESULTS}")
    args = parser.parse_args(argv)
    publish(section(measure(args.repeats), command_line("preparers.py", argv)), HEADING,
            RESULTS if args.write else None)


if __name__ == "__main__":
    main()
