"""Frame manifests (``frames_batch``): the FramesManifest schema, and each entry's image.

Ingestion pipelines write these files; keys beyond the schema are ignored, so manifests are
accepted as they are. A bare JSON array is read as the ``frames`` list. An entry embeds its
``image_path`` file, or else frame ``frame_number`` of the manifest's ``video_path``; relative
paths start at the manifest's own directory and every path is confined like ``video_file``.
The functions that touch files block: callers run them in worker threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embedding_server.errors import ApiError, InvalidInput, located, payload_too_large
from embedding_server.media.images import decode_image
from embedding_server.media.local_files import resolve_local_file, unreadable
from embedding_server.media.video import VideoFile
from embedding_server.settings import Settings

MiB = 1024 * 1024
MAX_MANIFEST_BYTES = 16 * MiB
MAX_REPORTED_ERRORS = 3

NonNegativeInt = Annotated[int, Field(ge=0)]


class FrameInfo(BaseModel):
    """One manifest entry: an image file, or frame ``frame_number`` of the manifest's video."""

    model_config = ConfigDict(extra="ignore")

    frame_number: NonNegativeInt
    timestamp: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    image_path: Annotated[str, Field(min_length=1)] | None = None
    type: Literal["full_frame", "detected_crop"]
    frame_interval: Annotated[int, Field(ge=1)] | None = None
    is_detected_crop: bool | None = None
    detection_confidence: Annotated[float, Field(ge=0, le=1)] | None = None
    crop_bbox: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt, NonNegativeInt] | None = None
    crop_index: NonNegativeInt | None = None

    @field_validator("crop_bbox")
    @classmethod
    def _ordered_corners(
        cls, box: tuple[int, int, int, int] | None
    ) -> tuple[int, int, int, int] | None:
        if box is not None and not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError("must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
        return box


class FramesManifest(BaseModel):
    """The manifest file: its frames in order, and the video that frames without images use."""

    model_config = ConfigDict(extra="ignore")

    frames: Annotated[list[FrameInfo], Field(min_length=1)]
    video_path: Annotated[str, Field(min_length=1)] | None = None
    video_metadata: dict[str, Any] | None = None
    processing_metadata: dict[str, Any] | None = None


def read_manifest(path: Path, shown: str) -> FramesManifest:
    """Parse and validate the manifest at ``path`` (``shown`` is the client's name for it).

    413 over :data:`MAX_MANIFEST_BYTES`; 422 with the reason for bad JSON or a schema
    violation. Blocks: run it in a worker thread.
    """
    try:
        document = orjson.loads(_read_capped(path, MAX_MANIFEST_BYTES, "manifest", shown))
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"frames manifest {shown} is not valid JSON ({error})") from None
    if isinstance(document, list):
        document = {"frames": document}
    try:
        return FramesManifest.model_validate(document)
    except ValidationError as error:
        raise InvalidInput(f"frames manifest {shown} does not follow the FramesManifest schema: "
                           f"{_reasons(error)}") from None


def _reasons(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:MAX_REPORTED_ERRORS]:
        location = ".".join(str(part) for part in item["loc"]) or "manifest"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def frame_sources(manifest: FramesManifest, anchor: Path, settings: Settings) -> list[Path | int]:
    """Per entry, the confined image file to embed or the frame number to take from the video.

    Every path is checked before any image is decoded, so a bad path fails the request early.
    """
    sources: list[Path | int] = []
    for position, frame in enumerate(manifest.frames):
        if frame.image_path is not None:
            sources.append(resolve_local_file(frame.image_path, settings, anchor))
        elif manifest.video_path is None:
            raise InvalidInput(f"frames[{position}] has no image_path and the manifest no video_path")
        else:
            sources.append(frame.frame_number)
    return sources


def check_frame_numbers(sources: list[Path | int], frame_count: int) -> None:
    """422 for an entry whose frame number is past the end of the manifest's video."""
    for position, source in enumerate(sources):
        if isinstance(source, int) and source >= frame_count:
            raise InvalidInput(f"frames[{position}].frame_number {source} is out of range: the "
                               f"video has {frame_count} frames")


def manifest_image(frame: FrameInfo, source: Path | int, video: VideoFile | None, position: int,
                   settings: Settings) -> Image.Image:
    """Entry ``position``'s image (its file, or its frame of ``video``), cropped to ``crop_bbox``."""
    try:
        if isinstance(source, Path):
            image = _image_file(source, settings)
        elif video is not None:
            image = Image.fromarray(video.frame(source))
        else:  # frame_sources yields frame numbers only for a manifest that names a video
            raise RuntimeError("a manifest frame number without a video")
        if frame.crop_bbox is None:
            return image
        if frame.crop_bbox[2] > image.width or frame.crop_bbox[3] > image.height:
            raise InvalidInput(f"crop_bbox {list(frame.crop_bbox)} exceeds the "
                               f"{image.width}x{image.height} image")
        return image.crop(frame.crop_bbox)
    except ApiError as error:
        raise located(f"frames[{position}]", error) from None


def _image_file(path: Path, settings: Settings) -> Image.Image:
    data = _read_capped(path, settings.max_image_bytes, "image", str(path))
    return decode_image(data, max_pixels=settings.max_image_pixels)


def _read_capped(path: Path, max_bytes: int, what: str, shown: str) -> bytes:
    """The file's bytes; 413 over ``max_bytes``, 422 when the system refuses to read it."""
    try:
        if path.stat().st_size > max_bytes:
            raise payload_too_large(what, max_bytes)
        return path.read_bytes()
    except OSError as error:
        raise unreadable(shown, error) from None
