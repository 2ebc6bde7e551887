"""Sample media and reference computations shared by the tests."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


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
