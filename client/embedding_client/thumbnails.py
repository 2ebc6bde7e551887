"""Small JPEG previews of search hits as ``data:`` URIs, decoded locally (Pillow, PyAV)."""

from __future__ import annotations

import base64
import io

import av
from PIL import Image, ImageOps

from embedding_client.folder import VIDEO
from embedding_client.store import Match

THUMBNAIL_PX = 256
JPEG_QUALITY = 85


def still(path: str) -> Image.Image:
    """The image at ``path`` the way viewers show it (EXIF orientation applied)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def video_frame(path: str, seconds: float) -> Image.Image:
    """The first frame shown at or after ``seconds`` into the video (timed from its first
    frame, as the server times frames): seek to the key frame before, decode forward."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        half_frame = 0.5 / float(stream.average_rate) if stream.average_rate else 1e-3
        target = start + seconds - half_frame
        if target > start:
            container.seek(int(target / stream.time_base), stream=stream)
        for frame in container.decode(stream):
            if frame.time is None or frame.time >= target:
                return frame.to_image()
    raise ValueError(f"{path} has no frame at {seconds} s")


def jpeg_uri(image: Image.Image) -> str:
    image = image.copy()
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_uri(match: Match) -> str | None:
    """The hit's preview, or ``None`` when its file is gone or no longer decodes.

    Any exception means the latter: a file replaced since indexing can be anything, and
    decoders answer malformed files with all kinds (``IndexError`` for a video without a
    video stream, ``SyntaxError`` or ``struct.error`` from Pillow's parsers, ...). A preview
    is never worth failing the page for."""
    try:
        if match.kind == VIDEO:
            return jpeg_uri(video_frame(match.path, match.timestamp or 0.0))
        return jpeg_uri(still(match.path))
    except Exception:
        return None
