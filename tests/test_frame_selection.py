"""Which frames a segment_config selects, and decord reading exactly those frames."""

from __future__ import annotations

import pytest

from embedding_server.http_api.errors import ApiError
from embedding_server.media.frame_selection import select_frames
from embedding_server.media.video import VideoFile, is_video_container
from embedding_server.http_api.schemas import SegmentConfig
from embedding_server.settings import Settings
from video_samples import index_video, read_index

SETTINGS = Settings(max_frames_per_request=120, max_extraction_fps=100)
FRAMES, FPS = 100, 10.0  # a 10-second video


def select(frames: int = FRAMES, fps: float = FPS, **config: object) -> list[int]:
    return select_frames(SegmentConfig(**config), frames, fps, SETTINGS)


@pytest.mark.parametrize(
    "config, expected",
    [
        pytest.param({}, [int(k * 99 / 63 + 0.5) for k in range(64)], id="default-64-over-all"),
        pytest.param({"num_frames": 4}, [0, 33, 66, 99], id="uniform-ends-included"),
        pytest.param({"num_frames": 5}, [0, 25, 50, 74, 99], id="uniform-rounds-half-up"),
        pytest.param({"num_frames": 1}, [0], id="one-frame-is-the-first"),
        pytest.param({"startOffsetSec": 2.5, "num_frames": 3}, [25, 62, 99], id="offset"),
        pytest.param({"startOffsetSec": 1, "clip_duration": 2, "num_frames": 3}, [10, 20, 29],
                     id="offset-and-duration"),
        pytest.param({"clip_duration": -1, "num_frames": 2}, [0, 99], id="minus-one-is-to-the-end"),
        pytest.param({"startOffsetSec": 9, "clip_duration": 60, "num_frames": 3}, [90, 95, 99],
                     id="duration-past-the-end-is-clipped"),
        pytest.param({"startOffsetSec": 9.7}, [97, 98, 99], id="short-segment-gives-each-frame-once"),
        pytest.param({"startOffsetSec": 0.05, "clip_duration": 0.01}, [0], id="tiny-segment-has-a-frame"),
        pytest.param({"startOffsetSec": 1, "clip_duration": 2, "extraction_fps": 2}, [10, 15, 20, 25],
                     id="fps"),
        pytest.param({"extraction_fps": 0.3}, [0, 33, 66], id="fractional-fps"),
        pytest.param({"startOffsetSec": 9.5, "extraction_fps": 50}, [95, 96, 97, 98, 99],
                     id="fps-above-the-video-rate-gives-every-frame-once"),
        pytest.param({"extraction_fps": 1, "num_frames": 2}, list(range(0, 100, 10)),
                     id="fps-beats-num-frames"),
        pytest.param({"frame_indexes": [7, 3, 3, 99], "extraction_fps": 1, "num_frames": 2,
                      "startOffsetSec": 5}, [7, 3, 3, 99], id="indexes-beat-everything-order-kept"),
    ],
)
def test_selected_frames(config, expected):
    assert select(**config) == expected


def test_times_use_the_average_frame_rate():
    ntsc = 30000 / 1001
    assert select(frames=300, fps=ntsc, startOffsetSec=1, clip_duration=1, extraction_fps=2) == [29, 44]
    assert select(frames=300, fps=ntsc, startOffsetSec=0.1, clip_duration=0.1) == [2, 3, 4, 5]


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"startOffsetSec": 10}, "segment starts at 10 s, at or past the end of the video (10.000 s, 100 frames)"),
        ({"startOffsetSec": 1e300}, "at or past the end of the video"),
        ({"frame_indexes": [0, 100]}, "frame_indexes[1] = 100 is out of range: the video has 100 frames (0..99)"),
        ({"num_frames": 121}, "too many frames: 121 requested, over the limit of 120 frames per request"),
        ({"frame_indexes": [0] * 121}, "over the limit of 120 frames per request"),
        ({"extraction_fps": 101}, "extraction_fps 101 is over the limit of 100 frames per second"),
    ],
)
def test_refused_configs_are_422(config, fragment):
    with pytest.raises(ApiError) as error:
        select(**config)
    assert error.value.status_code == 422
    assert fragment in error.value.detail


def test_fps_cap_counts_the_frames_a_rate_selects():
    with pytest.raises(ApiError, match="121 requested"):
        select(frames=1000, extraction_fps=5, clip_duration=24.2)  # 24.2 s at 5 fps
    assert len(select(frames=1000, extraction_fps=5, clip_duration=24)) == 120


@pytest.mark.parametrize(
    "config",
    [{"startOffsetSec": -1}, {"clip_duration": 0}, {"clip_duration": -2}, {"num_frames": 0},
     {"extraction_fps": 0}, {"extraction_fps": -3}, {"frame_indexes": [-1]}, {"frame_indexes": []},
     {"startOffsetSec": float("nan")}, {"clip_duration": float("inf")}, {"fps": 3}],
)
def test_schema_refuses_negative_zero_and_unknown_values(config):
    with pytest.raises(ValueError):
        SegmentConfig(**config)


def test_decord_reads_exactly_the_selected_frames(tmp_path):
    path = index_video(tmp_path / "clip.mp4", frames=150)
    video = VideoFile(path)
    assert (video.frame_count, video.fps) == (150, 10.0)
    wanted = [0, 149, 37, 5, 50, 51, 13, 12, 11, 100]  # backwards, across key frames, B-frames
    assert [read_index(video.frame(index)) for index in wanted] == wanted


@pytest.mark.parametrize(
    "head, known",
    [
        (b"\x00\x00\x00\x20ftypisom" + bytes(20), True),
        (b"\x1a\x45\xdf\xa3" + bytes(20), True),
        (b"RIFF\x00\x00\x00\x00AVI LIST", True),
        ((b"\x47" + bytes(187)) * 2 + b"\x47", True),
        (b"#EXTM3U\n#EXTINF:10,\n/etc/passwd\n", False),
        (b"ffconcat version 1.0\nfile '/etc/passwd'\n", False),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), False),
        (b"G" + bytes(30), False),
    ],
    ids=["mp4", "matroska", "avi", "mpeg-ts", "hls-playlist", "concat-list", "png", "lone-sync-byte"],
)
def test_only_video_containers_reach_ffmpeg(head, known):
    assert is_video_container(head) is known
