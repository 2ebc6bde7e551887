"""Sample media and reference computations shared by the tests."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize, ToTensor


def random_image(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unit_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N, D)`` arrays."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@torch.inference_mode()
def reference_text(reference: tuple, texts: list[str]) -> np.ndarray:
    """open_clip's own ``encode_text``, normalised."""
    model, _, tokenizer = reference
    return F.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()


@torch.inference_mode()
def reference_images(reference: tuple, images: list[Image.Image]) -> np.ndarray:
    """open_clip's own preprocessing and ``encode_image``, normalised."""
    model, preprocess, _ = reference
    batch = torch.stack([preprocess(image) for image in images])
    return F.normalize(model.encode_image(batch), dim=-1).numpy()


# Clearly different inputs give vectors at least this far apart (1 - cos) on every tiny entry:
# a hundred times the parity tolerance (cos > 0.9999), so parity on such inputs cannot hold
# for a runner that ignores its pixels or its tokens.
DISTINCT = 1e-2


def solid_image(rgb: tuple[int, int, int], width: int = 320, height: int = 240) -> Image.Image:
    return Image.new("RGB", (width, height), rgb)


def distinct_images() -> list[Image.Image]:
    """A red and a blue image, and two noise images (landscape and portrait)."""
    return [solid_image((255, 0, 0)), solid_image((0, 0, 255)),
            random_image(333, 211, seed=1), random_image(180, 320, seed=2)]


def smallest_gap(vectors: np.ndarray) -> float:
    """The smallest 1 - cos between two different rows of ``vectors``."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    gaps = 1 - unit @ unit.T
    return float(gaps[~np.eye(len(unit), dtype=bool)].min())


# Quadrant colours of asymmetric_image.
_QUADRANTS = np.array([[230, 30, 30], [30, 200, 40], [40, 60, 220], [240, 220, 40]])


def asymmetric_image(width: int, height: int) -> Image.Image:
    """Four colours in quadrants split off-centre (at a third of the width, three fifths of the
    height) over a diagonal gradient: a shifted, mirrored, squashed or differently filtered
    copy has other pixels, and the sharp edges show the resampling filter."""
    y, x = np.mgrid[0:height, 0:width]
    quadrant = (x >= width // 3).astype(int) + 2 * (y >= 3 * height // 5)
    gradient = np.stack([255 * x // width, 255 * y // height, 255 * (x + y) // (width + height)], axis=-1)
    return Image.fromarray(((3 * _QUADRANTS[quadrant] + gradient) // 4).astype(np.uint8))


def apple_mobileclip_preprocess(size: int = 256) -> Compose:
    """Apple's MobileCLIP inference transform (``mobileclip.create_model_and_transforms``):
    bilinear resize of the shorter side, centre crop, a 0..1 tensor without normalisation."""
    return Compose([Resize(size, interpolation=InterpolationMode.BILINEAR), CenterCrop(size), ToTensor()])
