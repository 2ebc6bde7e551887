"""Decode untrusted image bytes into RGB images, safely.

Guards: a pixel-count cap checked from the header before any pixel is decoded (the
decompression-bomb guard), every Pillow decoding failure mapped to a 422, and every mode
(palette, alpha, grey, 16-bit, float, CMYK, ...) converted to 8-bit RGB.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedding_server.errors import InvalidInput, payload_too_large

DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w=.+-]+)*;base64,", re.IGNORECASE)
WHITESPACE = re.compile(r"\s+")


def decode_base64(text: str, *, max_bytes: int, what: str = "image") -> bytes:
    """Decode standard or URL-safe base64 (a ``data:`` URL prefix is accepted).

    The size cap is checked on the text before decoding, so an oversized payload costs no
    decoding work.
    """
    text = DATA_URL.sub("", text.strip(), count=1)
    if (len(text) // 4) * 3 > max_bytes + 3:
        raise payload_too_large(what, max_bytes)
    text = WHITESPACE.sub("", text)
    if not text:
        raise InvalidInput(f"empty base64 {what} data")
    try:
        if "-" in text or "_" in text:
            text = text.replace("-", "+").replace("_", "/")
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} data is not valid base64") from None
    if len(data) > max_bytes:
        raise payload_too_large(what, max_bytes)
    return data


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode ``data`` into a fully loaded 8-bit RGB image, EXIF orientation applied."""
    if not data:
        raise InvalidInput("image data is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidInput("data is not a decodable image") from None
    except Exception as error:  # Pillow plugins raise many types on hostile headers
        raise InvalidInput(f"data is not a decodable image ({type(error).__name__})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidInput(f"image has an invalid size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidInput(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Exception as error:  # truncated or corrupt pixel data
        raise InvalidInput(f"image could not be decoded ({type(error).__name__}: {error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; alpha is dropped as the reference libraries do."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit integer or 0..1 float grey levels into 0..255."""
    floating = values.dtype.kind == "f"
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if floating and peak <= 1.0:
        values = values * 255.0
    elif peak > 255.0:
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
