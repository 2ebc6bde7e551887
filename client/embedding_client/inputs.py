"""What users pass, turned into what the server takes: images and videos as URLs or base64.

An image is a local path (``str`` or :class:`~pathlib.Path`), its bytes, a PIL image, or a URL
(a string starting ``http://``, ``https://`` or ``data:``, or an :class:`ImageUrl`). A video is
a local path or bytes (sent as base64), a URL, a :class:`ServerPath` (a file the server reads
itself) or a list of images (its frames).
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

URL_PREFIXES = ("http://", "https://")


@dataclass(frozen=True)
class ImageUrl:
    """An image the server downloads itself (needed where a plain string means a text: ``rank``)."""

    url: str


@dataclass(frozen=True)
class ServerPath:
    """A file on the server (``video_file``, under its ``EMBEDDING_VIDEO_DIR``), not sent."""

    path: str


ImageLike = Union[str, os.PathLike, bytes, ImageUrl, Any]  # Any: a PIL image
VideoLike = Union[str, os.PathLike, bytes, ServerPath, Sequence[ImageLike]]


def is_pil_image(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def _pil_bytes(image: Any) -> bytes:
    """A PIL image as PNG (lossless: the server sees the pixels the caller has)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_reference(image: ImageLike) -> tuple[str, str]:
    """``("url", url)`` or ``("base64", data)`` for ``image``; local files are read here."""
    if isinstance(image, ImageUrl):
        return "url", image.url
    if isinstance(image, str) and image.lower().startswith(URL_PREFIXES + ("data:",)):
        return "url", image
    if isinstance(image, (str, os.PathLike)):
        return "base64", _b64(Path(image).read_bytes())
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "base64", _b64(bytes(image))
    if is_pil_image(image):
        return "base64", _b64(_pil_bytes(image))
    raise TypeError(f"not an image: {type(image).__name__} (a path, bytes, a PIL image or a URL)")


def image_input(image: ImageLike) -> dict[str, str]:
    """The documented image input object (``image_url`` or ``image_base64``)."""
    kind, value = image_reference(image)
    return {"type": "image_url", "image_url": value} if kind == "url" else {
        "type": "image_base64", "image_base64": value}


def image_uri(image: ImageLike) -> str:
    """An item of the OpenAI-compatible route's image input: a URL or a ``data:`` URI."""
    kind, value = image_reference(image)
    return value if kind == "url" else f"data:application/octet-stream;base64,{value}"


def segment_config(*, start_offset_sec: float | None = None, clip_duration: float | None = None,
                   num_frames: int | None = None, extraction_fps: float | None = None,
                   frame_indexes: Sequence[int] | None = None) -> dict[str, Any]:
    """The server's ``segment_config`` from Python-style keywords; unset keys are left out,
    so the server's defaults apply."""
    config = {"startOffsetSec": start_offset_sec, "clip_duration": clip_duration, "num_frames": num_frames,
              "extraction_fps": extraction_fps,
              "frame_indexes": None if frame_indexes is None else [int(index) for index in frame_indexes]}
    return {key: value for key, value in config.items() if value is not None}


def video_input(video: VideoLike, config: dict[str, Any]) -> dict[str, Any]:
    """The documented video input object for ``video``."""
    if isinstance(video, ServerPath):
        return {"type": "video_file", "video_path": video.path, "segment_config": config}
    if isinstance(video, str) and video.lower().startswith(URL_PREFIXES):
        return {"type": "video_url", "video_url": video, "segment_config": config}
    if isinstance(video, (str, os.PathLike)):
        return {"type": "video_base64", "video_base64": _b64(Path(video).read_bytes()), "segment_config": config}
    if isinstance(video, (bytes, bytearray, memoryview)):
        return {"type": "video_base64", "video_base64": _b64(bytes(video)), "segment_config": config}
    if isinstance(video, Sequence):
        if config:
            raise ValueError("segment_config keywords apply to a video, not to a list of frames")
        return {"type": "video_frames", "video_frames": [image_input(frame) for frame in video]}
    raise TypeError(f"not a video: {type(video).__name__} (a path, bytes, a URL, a ServerPath or frames)")
