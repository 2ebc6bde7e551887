"""How the folder index asks for a video's frames: which video it names, and in what segments.

A video is uploaded (base64, read whole into the request) unless the server can read the
indexed folder itself (``server_dir``: a ``video_file`` path, nothing sent). An upload whose
base64 would be over ``max_upload_bytes`` is refused before the file is read, as the server's
body limit would refuse it after.

The server embeds at most ``EMBEDDING_MAX_FRAMES_PER_REQUEST`` (1024) frames per request, so
a long video is asked for in segments. Its duration and frame rate are probed locally with
PyAV. Sampling ``r`` frames a second of a video of ``f``, a segment of ``s`` seconds has at
most ``s * min(r, f)`` frames, so segments last ``frames_per_request / min(r, f)`` seconds: a
whole number of sampling steps (or of frames), so the segments together give exactly the
frames that one request for the whole video would.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import av
import numpy as np

from embedding_client.client import Client
from embedding_client.errors import ClientRequestError
from embedding_client.folder import VIDEO, MediaFile
from embedding_client.inputs import ServerPath, VideoLike
from embedding_client.results import VideoEmbeddings

MiB = 1 << 20
# The server's body limit is 32 MiB (EMBEDDING_MAX_BODY_BYTES); this leaves room for the rest.
MAX_UPLOAD_BYTES = 24 * MiB
FRAMES_PER_REQUEST = 512  # half the server's default cap
PAST_THE_END = "segment starts at"  # in the server's 422 for a segment past the end
SEGMENT_TOLERANCE = 1e-6  # of a segment: float error must not add an empty last segment


@dataclass(frozen=True)
class Probe:
    """What a video's container declares (``None``: it does not say)."""

    duration_s: float | None
    fps: float | None


def probe(path: Path) -> Probe:
    """The duration and average frame rate of the video at ``path``, without decoding it.

    Raises ``OSError`` when PyAV cannot open it or it has no video stream."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OSError("no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:  # Matroska declares the container's duration only
                duration = container.duration / av.time_base if container.duration is not None else None
            return Probe(duration, float(stream.average_rate) if stream.average_rate else None)
    except av.FFmpegError as error:
        raise OSError(f"not a video PyAV can open: {error}") from error


def segment_starts(duration_s: float | None, segment_s: float) -> Iterator[float]:
    """Where segments of ``segment_s`` start: up to ``duration_s``, or without a known duration
    on until the server answers that a segment starts past the end."""
    count = None if duration_s is None else max(1, math.ceil(duration_s / segment_s - SEGMENT_TOLERANCE))
    indexes: Iterable[int] = itertools.count() if count is None else range(count)
    return (index * segment_s for index in indexes)


def joined(parts: list[VideoEmbeddings]) -> VideoEmbeddings:
    """The segments' rows as one answer, in order."""
    return VideoEmbeddings(np.concatenate([part.vectors for part in parts]), parts[0].model,
                           frames=[frame for part in parts for frame in part.frames],
                           timestamps=[stamp for part in parts for stamp in part.timestamps], fps=parts[0].fps)


@dataclass(frozen=True)
class VideoRequests:
    """How the videos under ``root`` are asked for, ``fps`` frames a second of each.

    ``server_dir``: where the server sees ``root`` (its video root, or a shared volume); a
    video is then named there instead of uploaded."""

    root: Path
    fps: float
    frames_per_request: int = FRAMES_PER_REQUEST
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    server_dir: str | None = None

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.frames_per_request < 1 or self.max_upload_bytes < 1:
            raise ValueError("fps, frames_per_request and max_upload_bytes must be positive")

    def refusal(self, file: MediaFile) -> str | None:
        """Why ``file`` cannot be sent, known before reading it: a video too large to upload."""
        if file.kind != VIDEO or self.server_dir is not None or file.size * 4 / 3 <= self.max_upload_bytes:
            return None
        return (f"too large to send: {file.size / MiB:.1f} MiB, {file.size * 4 / 3 / MiB:.1f} MiB as base64, over "
                f"the upload limit of {self.max_upload_bytes / MiB:.1f} MiB; if the server can read this folder, "
                f"name where with --server-dir (server_dir=) and nothing is uploaded")

    def source(self, path: Path) -> VideoLike:
        """What the request names: the file's path on the server, else the file (uploaded)."""
        if self.server_dir is None:
            return path
        return ServerPath(str(PurePosixPath(self.server_dir, *path.relative_to(self.root).parts)))

    def embedded(self, client: Client, path: Path) -> VideoEmbeddings:
        """The frames of the video at ``path``, asked for segment by segment.

        Raises ``OSError`` when PyAV cannot open it, and the client's errors."""
        declared = probe(path)
        segment_s = self.frames_per_request / min(self.fps, declared.fps or self.fps)
        source = self.source(path)
        parts: list[VideoEmbeddings] = []
        for start in segment_starts(declared.duration_s, segment_s):
            try:
                parts.append(client.embed_video(source, start_offset_sec=start, clip_duration=segment_s,
                                                extraction_fps=self.fps))
            except ClientRequestError as error:
                if not (parts and PAST_THE_END in error.detail):  # the container's duration was long
                    raise
                break
        return joined(parts)
