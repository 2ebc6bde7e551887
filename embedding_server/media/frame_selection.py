"""Which frames of a video a ``segment_config`` selects: arithmetic only, nothing is decoded.

Times become frame numbers through the video's average frame rate ``fps``: frame ``i`` is on
screen from ``i / fps`` until ``(i + 1) / fps``. With ``N`` frames, ``s = startOffsetSec``
and ``d = clip_duration``:

* the segment runs from ``s`` to ``t = min(s + d, N / fps)``; without ``d`` (or with -1) to
  the end of the video. Its frames run from ``first = floor(s * fps)`` (the frame on screen at
  ``s``) up to, not including, ``end = ceil(t * fps)``, at least one frame. A segment that
  starts at or after the end of the video is a 422;
* ``frame_indexes`` (highest priority): exactly those 0-based frame numbers of the whole video,
  in the order given, repeats kept; the segment keys do not apply to them;
* ``extraction_fps = r``: the frames on screen at ``s, s + 1/r, s + 2/r, ...`` before ``t``;
  a rate at or above the video's own gives every frame of the segment once;
* ``num_frames = n`` (lowest priority; default from settings): ``n`` frames spread evenly over
  the segment's ``M`` frames, first and last included: ``first + floor(k * (M - 1) / (n - 1) +
  0.5)`` for ``k = 0 .. n-1`` (``n = 1`` gives ``first``); a segment of at most ``n`` frames
  gives all of its frames, each once.
"""

from __future__ import annotations

import math

import numpy as np

from embedding_server.http_api.errors import InvalidInput
from embedding_server.http_api.schemas import SegmentConfig
from embedding_server.settings import Settings

# In frames: absorbs float error in products such as 0.1 s x 30 fps = 3.0000000000000004.
EPSILON = 1e-6


def check_frame_count(count: int, settings: Settings) -> None:
    """422 when a request would embed more frames than the per-request cap."""
    cap = settings.max_frames_per_request
    if count > cap:
        raise InvalidInput(
            f"too many frames: {count} requested, over the limit of {cap} frames per request"
        )


def check_pixel_budget(frames: int, width: int, height: int, settings: Settings) -> None:
    """422 when decoding ``frames`` frames of ``width`` x ``height`` exceeds the request's budget."""
    budget = settings.max_video_pixels_per_request
    if frames * width * height > budget:
        raise InvalidInput(
            f"too many pixels to decode: {frames} frames of {width}x{height} are "
            f"{frames * width * height} pixels, over the limit of {budget} pixels per request"
        )


def check_segment_config(config: SegmentConfig, settings: Settings) -> None:
    """The checks that need no video, so a bad request is refused before any download."""
    if config.frame_indexes is not None:
        check_frame_count(len(config.frame_indexes), settings)
    elif config.extraction_fps is not None:
        if config.extraction_fps > settings.max_extraction_fps:
            raise InvalidInput(
                f"extraction_fps {config.extraction_fps:g} is over the limit of "
                f"{settings.max_extraction_fps:g} frames per second"
            )
    else:
        check_frame_count(config.num_frames or settings.video_default_num_frames, settings)


def select_frames(config: SegmentConfig, frame_count: int, fps: float, settings: Settings) -> list[int]:
    """The frame numbers to embed, in output order (see the module docstring for the rules)."""
    check_segment_config(config, settings)
    if config.frame_indexes is not None:
        return _explicit(config.frame_indexes, frame_count)
    start, stop = _segment_times(config, frame_count, fps)
    first = min(math.floor(start * fps + EPSILON), frame_count - 1)
    end = min(max(math.ceil(stop * fps - EPSILON), first + 1), frame_count)
    rate = config.extraction_fps
    if rate is None:
        return _spread(first, end, config.num_frames or settings.video_default_num_frames)
    if rate >= fps:
        check_frame_count(end - first, settings)
        return list(range(first, end))
    count = max(1, math.ceil((stop - start) * rate - EPSILON))
    check_frame_count(count, settings)
    times = start + np.arange(count, dtype=np.float64) / rate
    frames = np.clip(np.floor(times * fps + EPSILON).astype(np.int64), first, end - 1)
    return np.unique(frames).tolist()


def _explicit(frame_indexes: list[int], frame_count: int) -> list[int]:
    for position, index in enumerate(frame_indexes):
        if index >= frame_count:
            raise InvalidInput(
                f"frame_indexes[{position}] = {index} is out of range: the video has "
                f"{frame_count} frames (0..{frame_count - 1})"
            )
    return list(frame_indexes)


def _segment_times(config: SegmentConfig, frame_count: int, fps: float) -> tuple[float, float]:
    """``(start, stop)`` of the segment in seconds, ``stop`` at most the video's duration.

    Compared in seconds before any conversion to frames, so huge offsets or durations never
    reach ``floor``/``ceil`` as infinities.
    """
    duration = frame_count / fps
    start = config.startOffsetSec or 0.0
    if start >= duration:
        raise InvalidInput(
            f"segment starts at {start:g} s, at or past the end of the video "
            f"({duration:.3f} s, {frame_count} frames)"
        )
    length = config.clip_duration
    if length is None or length == -1 or start + length >= duration:
        return start, duration
    return start, start + length


def _spread(first: int, end: int, count: int) -> list[int]:
    frames = end - first
    if count >= frames:
        return list(range(first, end))
    if count == 1:
        return [first]
    steps = np.arange(count, dtype=np.float64) * (frames - 1) / (count - 1)
    return (first + np.floor(steps + 0.5).astype(np.int64)).tolist()
