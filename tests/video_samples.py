"""Small test videos, written with PyAV, whose frames show their own index.

Frame ``i`` carries ``i`` in binary as eight black-or-white stripes across its top half, so a
decoded frame tells which frame it is (:func:`read_index`); its bottom half is a grid of random
colours seeded by ``i``, which keeps the frames far apart for an image model too. The
preparers stand in for a model's own, and for decoders that hang or crash.
"""

from __future__ import annotations

import os
import signal
import threading
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 64, 48
BITS = 8
STRIPE = WIDTH // BITS
BLOCK = 8


def index_frame(index: int) -> np.ndarray:
    """RGB ``(HEIGHT, WIDTH, 3)`` frame that encodes ``index`` (0..255)."""
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for bit in range(BITS):
        if index >> bit & 1:
            frame[: HEIGHT // 2, bit * STRIPE:(bit + 1) * STRIPE] = 255
    rng = np.random.default_rng(index)
    blocks = rng.integers(0, 256, (HEIGHT // 2 // BLOCK, WIDTH // BLOCK, 3), dtype=np.uint8)
    frame[HEIGHT // 2:] = blocks.repeat(BLOCK, axis=0).repeat(BLOCK, axis=1)
    return frame


def read_index(frame: np.ndarray) -> int:
    """The index :func:`index_frame` drew into ``frame`` (read from the stripes' centres)."""
    top = frame[2: HEIGHT // 2 - 2].astype(np.float64)
    return sum(1 << bit for bit in range(BITS)
               if top[:, bit * STRIPE + 2:(bit + 1) * STRIPE - 2].mean() > 128)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float | Fraction, *,
                codec: str = "libx264", pixel_format: str = "rgb24",
                options: dict[str, str] | None = None, faststart: bool = False) -> Path:
    """Encode ``frames`` (``pixel_format`` arrays, all of one size) into ``path``."""
    container_options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as container:
        stream = None
        for array in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = _frame_size(array, pixel_format)
                stream.pix_fmt = "yuv420p"
                stream.options = options or {}
            frame = av.VideoFrame.from_ndarray(array, format=pixel_format)
            container.mux(stream.encode(frame))
        if stream is not None:
            container.mux(stream.encode(None))
    return path


def _frame_size(array: np.ndarray, pixel_format: str) -> tuple[int, int]:
    """``(width, height)`` of a frame array; yuv420p arrays stack the chroma planes below."""
    if pixel_format == "yuv420p":
        return array.shape[1], array.shape[0] * 2 // 3
    return array.shape[1], array.shape[0]


def index_video(path: Path, frames: int = 100, fps: float = 10, **kwargs: object) -> Path:
    """A video of ``frames`` index frames; a key frame every 12, with B-frames (x264's default)."""
    kwargs.setdefault("options", {"g": "12", "crf": "10"})
    return write_video(path, (index_frame(i) for i in range(frames)), fps, **kwargs)


def audio_only(path: Path) -> Path:
    """An AAC file with one second of silence and no video stream."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for number in range(16):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                                 layout="mono")
            samples.sample_rate, samples.pts = 16000, number * 1024
            container.mux(stream.encode(samples))
        container.mux(stream.encode(None))
    return path


def solid_video(path: Path, width: int, height: int, colour: tuple[int, int, int] = (10, 200, 10),
                frames: int = 5, fps: float = 10) -> Path:
    """``frames`` frames of one colour, ``width`` x ``height``."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = colour
    return write_video(path, (frame for _ in range(frames)), fps)


class SmallPreparer:
    """A stand-in for a model's preparer: any image to 16 x 16 RGB."""

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.uint8)


class HangingPreparer(SmallPreparer):
    """Never returns, as a hung native decoder would not."""

    def __call__(self, image: Image.Image) -> np.ndarray:
        threading.Event().wait()
        raise AssertionError("unreachable")


class CrashingPreparer(SmallPreparer):
    """Dies of a segmentation fault, as a crashing decoder would."""

    def __call__(self, image: Image.Image) -> np.ndarray:
        os.kill(os.getpid(), signal.SIGSEGV)
        raise AssertionError("unreachable")
