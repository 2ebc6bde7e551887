"""Decode untrusted image bytes into RGB images, safely.

Guards: only the formats of :data:`ACCEPTED_FORMATS` are parsed at all; a pixel-count cap
checked from the header before any pixel is decoded (the decompression-bomb guard); every
Pillow decoding failure mapped to a 422; every mode (palette, alpha, grey, 16-bit, float,
CMYK, ...) converted to 8-bit RGB without wide temporaries; only the first frame of an
animation is decoded. A JPEG much larger than the model's input may be decoded at a reduced
scale (``min_side``).
"""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from embedding_server.http_api.errors import InvalidInput, payload_too_large
from embedding_server.http_api.metrics import DECODE_SECONDS

DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w=.+-]+)*;base64,", re.IGNORECASE)
WHITESPACE = re.compile(r"\s+")
# What clients send as images (Pillow's opener names). JPEG's opener also yields MPO, as
# camera JPEGs carrying a preview or depth map open; PNG includes APNG. Every other Pillow
# plugin (PSD, EPS, ICO, PCX, SGI, TGA, XBM, ...) is refused before its parser runs: such
# files are rarely sent as photos, and each parser is attack surface.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED_TEXT = f"{', '.join(ACCEPTED_FORMATS)} (JPEG includes MPO)"
# Rows converted at a time from 16/32-bit grey to 8-bit, which bounds the temporaries.
BAND_ROWS = 256


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


@DECODE_SECONDS.labels(media="image").time()
def decode_image(data: bytes, *, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Decode ``data`` into a fully loaded 8-bit RGB image, EXIF orientation applied; the time
    it takes, refusals included, is observed in ``embedding_decode_seconds``.

    ``min_side``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, far
    cheaper than decoding in full and resizing) as long as both sides stay at least this long.
    """
    if not data:
        raise InvalidInput("image data is empty")
    image = _open(data)
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidInput(f"image has an invalid size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidInput(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
        )
    try:
        if min_side:
            image.draft(None, (min_side, min_side))  # a no-op for formats other than JPEG
        image.load()  # the first frame only: later frames are decoded on seek, never here
        ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)
    except Exception as error:  # truncated or corrupt pixel data
        raise InvalidInput(f"image could not be decoded ({type(error).__name__}: {error})") from None


def _open(data: bytes) -> ImageFile.ImageFile:
    """Identify ``data`` among :data:`ACCEPTED_FORMATS` and read its header (no pixels)."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise InvalidInput("data is not a decodable image (too many pixels)") from None
    except Exception as error:  # Pillow plugins raise many types on hostile headers
        reason = "" if isinstance(error, UnidentifiedImageError) else f" ({type(error).__name__})"
        raise InvalidInput(f"data is not a decodable image{reason}; accepted formats: {ACCEPTED_TEXT}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; alpha is dropped as the reference libraries do."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _grey_to_uint8(image).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _grey_to_uint8(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey levels as an 8-bit ``L`` image, band by band.

    0..1 floats are scaled by 255 and levels above 255 divided by 257 (65535 becomes 255);
    images whose levels fit in 0..255 keep them. Converting the whole image at once would
    take 8-byte floats per pixel (512 MB at 64 MP); bands keep the temporaries to
    :data:`BAND_ROWS` rows.
    """
    bands = [(top, min(top + BAND_ROWS, image.height)) for top in range(0, image.height, BAND_ROWS)]
    peak = max(float(np.asarray(image.crop((0, top, image.width, bottom))).max()) for top, bottom in bands)
    multiply, divide = (255.0, 1.0) if image.mode == "F" and peak <= 1.0 else (1.0, 257.0 if peak > 255.0 else 1.0)
    grey = np.empty((image.height, image.width), dtype=np.uint8)
    for top, bottom in bands:
        values = np.asarray(image.crop((0, top, image.width, bottom)), dtype=np.float64)
        grey[top:bottom] = np.clip(np.rint(values * multiply / divide), 0, 255)
    return Image.fromarray(grey, mode="L")
