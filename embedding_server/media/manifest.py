"""Frame manifests (``frames_batch``): the FramesManifest schema, and each entry's image.

Ingestion pipelines write these files; keys beyond the schema are ignored, so manifests are
accepted as they are. A bare JSON array is read as the ``frames`` list. An entry embeds its
``image_path`` file, or else frame ``frame_number`` of the manifest's ``video_path``; relative
paths start at the manifest's own directory and every file is opened confined like
``video_file`` (:func:`~embedding_server.media.local_files.open_local_file`). The functions
that touch files block: callers run them in worker threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embedding_server.http_api.errors import ApiError, InvalidInput, located
from embedding_server.media.frame_selection import check_frame_count
from embedding_server.media.images import decode_image
from embedding_server.media.local_files import OpenedFile, open_local_file
from embedding_server.settings import MiB, Settings
from embedding_server.validation_errors import MAX_REPORTED_ERRORS, describe_errors, location

MAX_MANIFEST_BYTES = 16 * MiB

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


def read_manifest(file: OpenedFile, settings: Settings) -> FramesManifest:
    """Parse and validate the opened manifest ``file``.

    413 over :data:`MAX_MANIFEST_BYTES`; 422 with the reason for bad JSON, a schema violation
    or more entries than the frame cap. The cap is checked twice before the schema is: on the
    bytes (every entry needs a ``"frame_number"`` key), which refuses a huge manifest without
    parsing it, and on the parsed list (for keys written with escapes). Blocks: run it in a
    worker thread.
    """
    shown = file.shown
    data = file.read_capped(MAX_MANIFEST_BYTES, "manifest")
    check_frame_count(data.count(b'"frame_number"'), settings)
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"frames manifest {shown} is not valid JSON ({error})") from None
    del data
    if isinstance(document, list):
        document = {"frames": document}
    if isinstance(document, dict) and isinstance(document.get("frames"), list):
        check_frame_count(len(document["frames"]), settings)
    try:
        return FramesManifest.model_validate(document)
    except ValidationError as error:
        raise InvalidInput(f"frames manifest {shown} does not follow the FramesManifest schema: "
                           f"{_reasons(error)}") from None


def _reasons(error: ValidationError) -> str:
    return describe_errors(error.errors(), lambda item: location(item, "manifest"), MAX_REPORTED_ERRORS)


def frame_sources(manifest: FramesManifest, anchor: Path, settings: Settings) -> list[str | int]:
    """Per entry, the image path to embed or the frame number to take from the video.

    Every image is opened (confined) and closed again here, so a bad path fails the request
    before anything is decoded; it is opened anew, and confined anew, when it is read.
    """
    sources: list[str | int] = []
    for position, frame in enumerate(manifest.frames):
        if frame.image_path is not None:
            open_local_file(frame.image_path, settings, anchor).close()
            sources.append(frame.image_path)
        elif manifest.video_path is None:
            raise InvalidInput(f"frames[{position}] has no image_path and the manifest no video_path")
        else:
            sources.append(frame.frame_number)
    return sources


def check_frame_numbers(sources: list[str | int], frame_count: int) -> None:
    """422 for an entry whose frame number is past the end of the manifest's video."""
    for position, source in enumerate(sources):
        if isinstance(source, int) and source >= frame_count:
            raise InvalidInput(f"frames[{position}].frame_number {source} is out of range: the "
                               f"video has {frame_count} frames")


def check_crop(frame: FrameInfo, width: int, height: int, position: int) -> None:
    """422 naming entry ``position`` when its ``crop_bbox`` leaves a ``width`` x ``height`` image."""
    box = frame.crop_bbox
    if box is not None and (box[2] > width or box[3] > height):
        raise located(f"frames[{position}]", InvalidInput(
            f"crop_bbox {list(box)} exceeds the {width}x{height} image"))


def manifest_image(frame: FrameInfo, position: int, anchor: Path, settings: Settings) -> Image.Image:
    """Entry ``position``'s image file (``frame.image_path``), cropped to ``crop_bbox``."""
    assert frame.image_path is not None  # frame_sources gives paths only for such entries
    try:
        with open_local_file(frame.image_path, settings, anchor) as file:
            data = file.read_capped(settings.max_image_bytes, "image")
        image = decode_image(data, max_pixels=settings.max_image_pixels)
    except ApiError as error:
        raise located(f"frames[{position}]", error) from None
    check_crop(frame, image.width, image.height, position)
    return image if frame.crop_bbox is None else image.crop(frame.crop_bbox)
