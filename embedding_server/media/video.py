"""Reading chosen frames of a video file with decord, without decoding the rest.

decord seeks to the key frame before each requested frame and decodes forward from there
(frames passed on the way are decoded but never converted to RGB), so a few frames of a long
video cost a few groups of pictures, not the whole video. Frames are read one at a time, so
memory holds one full-size frame beyond what the caller keeps.

Before decord (and the FFmpeg inside it) sees a file, its first bytes must show a known video
container. FFmpeg would otherwise also accept playlists and concat lists (HLS ``.m3u8``,
``ffconcat``) whose entries make it open other local files or URLs, around both the path
confinement and the URL policy.

The frame size comes from the container's stream parameters, read with PyAV before decord
opens the file (decord shows no size before it decodes), and is checked against the pixel cap
and a minimum side; every decoded frame must then have exactly that shape, three channels and
8 bits, so nothing else is ever embedded.

All functions here block; they run in the decoding process (:mod:`.decode_worker`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import av
import decord
import numpy as np

from embedding_server.http_api.errors import InvalidInput
from embedding_server.media.local_files import unreadable

HEAD_BYTES = 512
_TS_PACKET = 188
_ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_MAGIC = (
    b"\x1a\x45\xdf\xa3",  # Matroska, WebM
    b"FLV\x01",
    b"OggS",
    b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF, WMV
    b"\x00\x00\x01\xba",  # MPEG program stream
)
SUPPORTED_CONTAINERS = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg or ASF"
# Smallest accepted frame side. 16 px is one codec macroblock and about one patch of the
# catalogue's vision towers (patches of 14 to 32 px): a narrower frame holds under one patch
# of real content and would be embedded as an upscaled blur.
MIN_FRAME_SIDE = 16


@dataclass(frozen=True)
class FrameLimits:
    """Size limits of decoded frames (``max_pixels``: the image inputs' pixel cap)."""

    max_pixels: int
    min_side: int = MIN_FRAME_SIDE

    def check(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise InvalidInput(f"video frames of {width}x{height} pixels exceed the limit of "
                               f"{self.max_pixels} pixels")
        if min(width, height) < self.min_side:
            raise InvalidInput(f"video frames of {width}x{height} pixels are too small: each side "
                               f"must be at least {self.min_side} pixels")


def is_video_container(head: bytes) -> bool:
    """Whether ``head`` (the file's first bytes) starts a container format served here."""
    if head[4:8] in _ISO_BOXES:  # MP4, MOV, 3GP: the first box's type
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return True
    if any(head.startswith(magic) for magic in _MAGIC):
        return True
    # MPEG transport stream: a sync byte every 188 bytes (M2TS adds a 4-byte prefix).
    return any(
        len(head) > offset + _TS_PACKET and head[offset] == head[offset + _TS_PACKET] == 0x47
        for offset in (0, 4)
    )


class VideoFile:
    """An opened video: its frame count, rate and size, and random access to its frames.

    ``path`` may be a ``/proc/self/fd/N`` name of an already opened, confined file. With
    ``limits`` the declared frame size is checked before any frame is decoded.
    """

    def __init__(self, path: str | os.PathLike[str], limits: FrameLimits | None = None) -> None:
        path = os.fspath(path)
        try:
            with open(path, "rb") as file:
                head = file.read(HEAD_BYTES)
        except OSError as error:
            raise unreadable("the video file", error) from None
        if not head:
            raise InvalidInput("the video file is empty")
        if not is_video_container(head):
            raise InvalidInput(
                f"data is not a video in a supported container ({SUPPORTED_CONTAINERS})"
            )
        self.width, self.height = probe_frame_size(path)
        if limits is not None:
            limits.check(self.width, self.height)
        try:
            self._reader: decord.VideoReader | None = decord.VideoReader(path)
            self.frame_count = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as error:  # decord raises DECORDError, RuntimeError or AssertionError
            raise InvalidInput(_open_failure(error)) from None
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise InvalidInput("the video reports no usable frame rate")

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 ``(H, W, 3)`` RGB of the probed size."""
        if self._reader is None:
            raise RuntimeError("the video is closed")
        try:
            array = self._reader[index].asnumpy()
        except Exception as error:  # DECORDError, or StopIteration past a truncated end
            raise InvalidInput(
                f"the video could not be decoded at frame {index} ({type(error).__name__})"
            ) from None
        return checked_frame(array, index, self.width, self.height)

    def close(self) -> None:
        """Frees decord's reader (its file handle and codec) now rather than at collection."""
        self._reader = None


def probe_frame_size(path: str) -> tuple[int, int]:
    """``(width, height)`` of the stream decord will decode, from the container's parameters.

    PyAV reads the headers (and at most FFmpeg's probe of the first packets); no frame is
    converted or kept.
    """
    try:
        with av.open(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise InvalidInput("the file has no video stream")
            width, height = stream.codec_context.width, stream.codec_context.height
    except InvalidInput:
        raise
    except Exception as error:  # av.error.FFmpegError subclasses, on hostile headers others
        raise InvalidInput(_open_failure(error)) from None
    if width < 1 or height < 1:
        raise InvalidInput(f"the video declares an invalid frame size {width}x{height}")
    return width, height


def checked_frame(array: np.ndarray, index: int, width: int, height: int) -> np.ndarray:
    """``array`` if it is uint8 ``(height, width, 3)``; else 422 rather than embed garbage."""
    if array.dtype != np.uint8 or array.shape != (height, width, 3):
        raise InvalidInput(
            f"frame {index} decoded as {array.dtype} {tuple(array.shape)}, not the "
            f"{width}x{height} RGB frames the stream declares"
        )
    return array


def _open_failure(error: Exception) -> str:
    if "cannot find video stream" in str(error):
        return "the file has no video stream"
    return f"the video could not be decoded ({type(error).__name__})"
