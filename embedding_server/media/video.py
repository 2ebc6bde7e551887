"""Reading chosen frames of a video file with decord, without decoding the rest.

decord seeks to the key frame before each requested frame and decodes forward from there
(frames passed on the way are decoded but never converted to RGB), so a few frames of a long
video cost a few groups of pictures, not the whole video. Frames are read one at a time, so
memory holds one full-size frame beyond what the caller keeps.

Before decord (and the FFmpeg inside it) sees a file, its first bytes must show a known video
container. FFmpeg would otherwise also accept playlists and concat lists (HLS ``.m3u8``,
``ffconcat``) whose entries make it open other local files or URLs, around both the path
confinement and the URL policy.

All functions here block; callers run them in worker threads.
"""

from __future__ import annotations

import math
from pathlib import Path

import decord
import numpy as np

from embedding_server.errors import InvalidInput
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
    """An opened video: its frame count and rate, and random access to its frames."""

    def __init__(self, path: Path) -> None:
        try:
            with path.open("rb") as file:
                head = file.read(HEAD_BYTES)
        except OSError as error:
            raise unreadable("the video file", error) from None
        if not head:
            raise InvalidInput("the video file is empty")
        if not is_video_container(head):
            raise InvalidInput(
                f"data is not a video in a supported container ({SUPPORTED_CONTAINERS})"
            )
        try:
            self._reader: decord.VideoReader | None = decord.VideoReader(str(path))
            self.frame_count = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as error:  # decord raises DECORDError, RuntimeError or AssertionError
            raise InvalidInput(_open_failure(error)) from None
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise InvalidInput("the video reports no usable frame rate")

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 ``(H, W, 3)`` RGB."""
        if self._reader is None:
            raise RuntimeError("the video is closed")
        try:
            return self._reader[index].asnumpy()
        except Exception as error:  # DECORDError, or StopIteration past a truncated end
            raise InvalidInput(
                f"the video could not be decoded at frame {index} ({type(error).__name__})"
            ) from None

    def close(self) -> None:
        """Frees decord's reader (its file handle and codec) now rather than at collection."""
        self._reader = None


def _open_failure(error: Exception) -> str:
    if "cannot find video stream" in str(error):
        return "the file has no video stream"
    return f"the video could not be decoded ({type(error).__name__})"
