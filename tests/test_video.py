"""Video inputs through the public API: which frames, which vectors, and every refusal.

The test video's frames are all different (``video_samples``); the reference vector of each
frame is the image path's vector of that frame as decord decodes it. A video response is
mapped back to frame numbers by nearest reference, and each match must be a parity match
(cosine > 0.9999), so every test here checks both the selection and the vectors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import bentoml
import decord
import numpy as np
import pytest
from fastapi import Depends
from PIL import Image

from helpers import embed, pipeline_overridden, vectors_of
from local_http import serve_routes
from samples import b64, encoded, unit_cosines
from video_samples import audio_only, index_frame, index_video

FRAMES, FPS = 100, 10
CAP = 120
BATCH = 8
MAX_VIDEO_BYTES = 64 * 1024


def png_b64(frame: np.ndarray) -> str:
    return b64(encoded(Image.fromarray(frame)))


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> SimpleNamespace:
    """The directories of these tests; the video root is reached through a symlinked parent
    (``/tmp`` may be one), while a root that is itself a symlink is refused."""
    base = tmp_path_factory.mktemp("video-inputs")
    real_base, extra, outside, temp = (base / name for name in ("real-base", "extra", "outside", "temp"))
    real_root = real_base / "root"
    for directory in (real_base, real_root, extra, outside, real_root / "frames", real_root / "sub"):
        directory.mkdir()
    (base / "linked-base").symlink_to(real_base)
    clip = index_video(real_root / "clip.mp4", FRAMES, FPS)
    shutil.copy(clip, extra / "clip.mp4")
    shutil.copy(clip, outside / "clip.mp4")
    return SimpleNamespace(root=base / "linked-base" / "root", real_root=real_root, extra=extra, outside=outside,
                           temp=temp, clip=clip)


@pytest.fixture(scope="module")
def settings(place):
    from embedding_server.settings import Settings

    return Settings(video_root=place.root, video_allowed_roots=(place.extra,), video_temp_dir=place.temp,
                    max_frames_per_request=CAP, image_max_batch_size=BATCH,
                    max_video_bytes=MAX_VIDEO_BYTES, url_allowed_hosts=("127.0.0.1",))


@pytest.fixture(scope="module")
def preparer(service_module):
    return service_module.MODEL.adapter.load_image_preparer(Path(service_module.ENTRY.path))


def pipeline_on_the_service_encoder(model, preparer, settings):
    """A dependency giving a pipeline with these settings on the session service's own Encoder."""
    from embedding_server.encoder.client import EncoderConnection
    from embedding_server.pipeline import EmbeddingPipeline

    built = {}

    def pipeline(service=Depends(bentoml.get_current_service)) -> EmbeddingPipeline:
        if "pipeline" not in built:
            built["pipeline"] = EmbeddingPipeline(model, EncoderConnection(service.encoder), preparer,
                                                  settings)
        return built["pipeline"]

    return pipeline


@pytest.fixture(scope="module")
def video_pipeline(service_module, preparer, settings):
    return pipeline_on_the_service_encoder(service_module.MODEL, preparer, settings)


@pytest.fixture
def client(api_client, video_pipeline, use_pipeline):
    use_pipeline(video_pipeline)
    return api_client


@pytest.fixture(scope="module")
def decoded(place) -> np.ndarray:
    """Every frame of the test clip as decord decodes it, independently of the server."""
    return decord.VideoReader(str(place.clip)).get_batch(list(range(FRAMES))).asnumpy()


@pytest.fixture(scope="module")
def reference(api_client, video_pipeline, decoded) -> np.ndarray:
    """The image path's vector of every frame (one video_frames request of image_base64)."""
    frames = [{"type": "image_base64", "image_base64": png_b64(frame)} for frame in decoded]
    with pipeline_overridden(video_pipeline):
        vectors = vectors_of(embed(api_client, {"type": "video_frames", "video_frames": frames}))
    assert vectors.shape == (FRAMES, 512)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    assert similarity.max() < 0.9999  # no two frames pass for each other: matches are unique
    return vectors


def frames_of(vectors: np.ndarray, reference: np.ndarray) -> list[int]:
    """The frame number of each vector: its nearest reference, which must match it exactly."""
    similarity = np.atleast_2d(vectors) @ reference.T
    nearest = similarity.argmax(axis=1)
    assert (similarity[np.arange(len(nearest)), nearest] > 0.9999).all()
    return nearest.tolist()


@pytest.fixture
def temp_is_left_empty(place):
    yield
    assert not place.temp.exists() or list(place.temp.iterdir()) == []


# --- which frames ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "config, expected",
    [
        pytest.param({}, [int(k * 99 / 63 + 0.5) for k in range(64)], id="defaults-64-uniform"),
        pytest.param({"startOffsetSec": 0, "clip_duration": -1, "num_frames": 4}, [0, 33, 66, 99],
                     id="spec-example"),
        pytest.param({"startOffsetSec": 2.5, "num_frames": 3}, [25, 62, 99], id="offset"),
        pytest.param({"startOffsetSec": 1, "clip_duration": 2, "num_frames": 3}, [10, 20, 29],
                     id="offset-and-duration"),
        pytest.param({"startOffsetSec": 1, "clip_duration": 2, "extraction_fps": 2}, [10, 15, 20, 25],
                     id="fps"),
        pytest.param({"startOffsetSec": 9.5, "extraction_fps": 30}, [95, 96, 97, 98, 99],
                     id="fps-above-the-video-rate"),
        pytest.param({"extraction_fps": 1, "num_frames": 3}, list(range(0, 100, 10)), id="fps-beats-num-frames"),
        pytest.param({"frame_indexes": [57, 3, 3, 99, 0], "extraction_fps": 1, "startOffsetSec": 5},
                     [57, 3, 3, 99, 0], id="indexes-beat-everything-in-their-order"),
    ],
)
def test_video_file_embeds_the_selected_frames(client, reference, config, expected):
    item = {"type": "video_file", "video_path": "clip.mp4", "segment_config": config}
    vectors = vectors_of(embed(client, item))
    assert frames_of(vectors, reference) == expected
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_segment_config_is_optional(client, reference):
    vectors = vectors_of(embed(client, {"type": "video_file", "video_path": "clip.mp4"}))
    assert len(vectors) == 64


def test_segment_past_the_end_is_422(client):
    item = {"type": "video_file", "video_path": "clip.mp4", "segment_config": {"startOffsetSec": 12}}
    response = embed(client, item)
    assert (response.status_code, response.json()["detail"]) == (
        422, "Invalid input data: segment starts at 12 s, at or past the end of the video (10.000 s, 100 frames)")


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"frame_indexes": [5, 100]}, "frame_indexes[1] = 100 is out of range: the video has 100 frames"),
        ({"num_frames": CAP + 1}, f"{CAP + 1} requested, over the limit of {CAP} frames per request"),
        ({"extraction_fps": 1000}, "extraction_fps 1000 is over the limit of 240 frames per second"),
        ({"startOffsetSec": -1}, "segment_config.startOffsetSec"),
        ({"clip_duration": 0}, "must be a positive number of seconds, or -1"),
        ({"extraction_fps": 0}, "segment_config.extraction_fps"),
        ({"num_frames": 0}, "segment_config.num_frames"),
        ({"frame_indexes": [3, -1]}, "segment_config.frame_indexes.1"),
        ({"start_offset": 2}, "segment_config.start_offset"),
    ],
)
def test_bad_segment_configs_are_422_with_the_reason(client, config, fragment):
    response = embed(client, {"type": "video_file", "video_path": "clip.mp4", "segment_config": config})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid input data: ")
    assert fragment in response.json()["detail"]


# --- vectors and transports -----------------------------------------------------------------

def test_video_frames_equal_image_inputs(client, reference, decoded):
    for index in (0, 57):
        item = {"type": "image_base64", "image_base64": png_b64(decoded[index])}
        assert unit_cosines(vectors_of(embed(client, item)), reference[index])[0] > 0.9999


def test_video_frames_mixes_urls_and_base64_in_order(client, reference, decoded):
    routes = {"/f7.png": (200, encoded(Image.fromarray(decoded[7])), "image/png")}
    with serve_routes(routes) as base:
        frames = [{"type": "image_base64", "image_base64": png_b64(decoded[40])},
                  {"type": "image_url", "image_url": f"{base}/f7.png"}]
        vectors = vectors_of(embed(client, {"type": "video_frames", "video_frames": frames}))
    assert frames_of(vectors, reference) == [40, 7]


def test_video_frames_bad_frame_is_named(client):
    frames = [{"type": "image_base64", "image_base64": png_b64(index_frame(1))},
              {"type": "image_base64", "image_base64": "@@@"}]
    response = embed(client, {"type": "video_frames", "video_frames": frames})
    assert response.status_code == 422
    assert response.json()["detail"] == "Invalid input data: video_frames[1]: image data is not valid base64"


def test_video_frames_over_the_cap_is_422(client):
    frames = [{"type": "image_base64", "image_base64": "AAAA"}] * (CAP + 1)
    response = embed(client, {"type": "video_frames", "video_frames": frames})
    assert response.status_code == 422
    assert f"over the limit of {CAP} frames per request" in response.json()["detail"]


def test_video_base64_and_url_equal_video_file(client, reference, place, temp_is_left_empty):
    config = {"startOffsetSec": 3, "clip_duration": 4, "extraction_fps": 1}
    data = place.clip.read_bytes()
    with serve_routes({"/clip.mp4": (200, data, "video/mp4")}) as base:
        from_url = embed(client, {"type": "video_url", "video_url": f"{base}/clip.mp4", "segment_config": config})
    from_base64 = embed(client, {"type": "video_base64", "video_base64": b64(data), "segment_config": config})
    for response in (from_url, from_base64):
        assert frames_of(vectors_of(response), reference) == [30, 40, 50, 60]


def test_video_base64_encoding_format(client, reference, place):
    item = {"type": "video_base64", "video_base64": b64(place.clip.read_bytes()),
            "segment_config": {"frame_indexes": [8, 2]}}
    rows = embed(client, item, "base64").json()["embedding"]
    decoded_rows = np.stack([np.frombuffer(base64.b64decode(row), dtype="<f4") for row in rows])
    assert frames_of(decoded_rows, reference) == [8, 2]


def test_oversized_videos_are_413(client, temp_is_left_empty):
    too_big = os.urandom(MAX_VIDEO_BYTES + 1)
    with serve_routes({"/big.mp4": (200, too_big, "video/mp4")}) as base:
        from_url = embed(client, {"type": "video_url", "video_url": f"{base}/big.mp4"})
    from_base64 = embed(client, {"type": "video_base64", "video_base64": b64(too_big)})
    expected = f"Video too large: exceeds {MAX_VIDEO_BYTES} bytes"
    assert (from_url.status_code, from_url.json()["detail"]) == (413, expected)
    assert (from_base64.status_code, from_base64.json()["detail"]) == (413, expected)


def test_video_url_policy_applies(client):
    response = embed(client, {"type": "video_url", "video_url": "http://169.254.169.254/v.mp4"})
    assert response.status_code == 400 and "URL not allowed" in response.json()["detail"]


# --- bad videos -----------------------------------------------------------------------------

def _bad_videos(directory: Path) -> dict[str, bytes]:
    good = index_video(directory / "good.mp4", 30, FPS, faststart=True).read_bytes()
    corrupt = bytearray(good)
    rng = np.random.default_rng(0)
    corrupt[len(good) // 3:] = rng.integers(0, 256, len(good) - len(good) // 3, dtype=np.uint8).tobytes()
    return {
        "zero-length": b"",
        "not-a-video": b"hello, I am plain text and no video at all\n" * 20,
        "png-image": encoded(Image.fromarray(index_frame(3))),
        "truncated": good[: len(good) // 2],
        "corrupt": bytes(corrupt),
        "audio-only": audio_only(directory / "audio.mp4").read_bytes(),
        "hls-playlist": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n" + str(directory / "good.mp4").encode()
                        + b"\n#EXT-X-ENDLIST\n",
    }


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory) -> dict[str, bytes]:
    return _bad_videos(tmp_path_factory.mktemp("bad-videos"))


@pytest.mark.parametrize("transport", ["video_base64", "video_url", "video_file"])
@pytest.mark.parametrize("kind", ["zero-length", "not-a-video", "png-image", "truncated", "corrupt",
                                  "audio-only", "hls-playlist"])
def test_bad_videos_are_422_and_leave_no_temp_file(client, place, bad_videos, kind, transport,
                                                   temp_is_left_empty):
    data = bad_videos[kind]
    if transport == "video_base64":
        item = {"type": "video_base64", "video_base64": b64(data) or "="}
        response = embed(client, item)
    elif transport == "video_url":
        with serve_routes({"/v.mp4": (200, data, "video/mp4")}) as base:
            response = embed(client, {"type": "video_url", "video_url": f"{base}/v.mp4"})
    else:
        (place.real_root / f"bad-{kind}.mp4").write_bytes(data)
        response = embed(client, {"type": "video_file", "video_path": f"bad-{kind}.mp4"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("Invalid input data: ")


def test_audio_only_says_so(client, bad_videos):
    response = embed(client, {"type": "video_base64", "video_base64": b64(bad_videos["audio-only"])})
    assert response.json()["detail"] == "Invalid input data: the file has no video stream"


# --- local files ----------------------------------------------------------------------------

def test_paths_inside_the_allowed_roots(client, reference, place):
    (place.real_root / "sub" / "clip.mp4").write_bytes(place.clip.read_bytes())
    (place.real_root / "inside-link.mp4").symlink_to(place.real_root / "clip.mp4")
    config = {"frame_indexes": [11]}
    for path in ("clip.mp4", "sub/clip.mp4", "inside-link.mp4", str(place.root / "clip.mp4"),
                 str(place.real_root / "clip.mp4"), str(place.extra / "clip.mp4")):
        response = embed(client, {"type": "video_file", "video_path": path, "segment_config": config})
        assert frames_of(vectors_of(response), reference) == [11], path


@pytest.mark.timeout(60)
def test_escapes_are_403_and_open_nothing(client, place):
    fifo = place.outside / "fifo.mp4"  # opening it for reading would block: a refusal must not
    os.mkfifo(fifo)
    (place.real_root / "escape.mp4").symlink_to(place.outside / "clip.mp4")
    (place.real_root / "escape-fifo.mp4").symlink_to(fifo)
    (place.real_root / "dir-link").symlink_to(place.outside)
    for path in ("../outside/clip.mp4", "sub/../clip.mp4", str(place.outside / "clip.mp4"), str(fifo),
                 "escape.mp4", "escape-fifo.mp4", "dir-link/clip.mp4", str(place.outside / "missing.mp4"),
                 "/etc/passwd"):
        response = embed(client, {"type": "video_file", "video_path": path})
        assert (response.status_code, response.json()["detail"]) == (
            403, f"Access denied: {path} is outside the allowed video directories"), path


def test_missing_files_are_404(client, place):
    for path in ("nope.mp4", str(place.root / "nope.mp4"), str(place.extra / "sub" / "nope.mp4")):
        response = embed(client, {"type": "video_file", "video_path": path})
        assert (response.status_code, response.json()) == (404, {"detail": f"File not found: {path}"})


@pytest.mark.parametrize(
    "path, fragment",
    [("sub", "sub is not a regular file"), ("a" * 300, "cannot be read (File name too long)"),
     ("clip\u0000.mp4", "file path contains a NUL character")],
    ids=["directory", "name-too-long", "nul"],
)
def test_unusable_paths_are_422(client, path, fragment):
    response = embed(client, {"type": "video_file", "video_path": path})
    assert response.status_code == 422 and fragment in response.json()["detail"]


# --- frame manifests ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def frame_files(place, decoded) -> Path:
    """PNG files of frames 3, 40 and 5 in root/frames, as the users' pipelines extract them."""
    directory = place.real_root / "frames"
    for index in (3, 40, 5):
        Image.fromarray(decoded[index]).save(directory / f"f_{index}.png")
    return directory


def write_manifest(directory: Path, document: object, name: str = "manifest.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(document))
    return path


def entry(number: int, image_path: str | None = None, **extra: object) -> dict:
    return {"frame_number": number, "timestamp": number / FPS, "image_path": image_path,
            "type": "full_frame", **extra}


def test_manifest_embeds_files_and_video_frames_in_manifest_order(client, reference, place, frame_files):
    manifest = {
        "video_path": str(place.root / "clip.mp4"),
        "frames": [entry(40, str(frame_files / "f_40.png")), entry(7), entry(3, "f_3.png"),
                   entry(90, image_path=None, frame_interval=10, is_detected_crop=False)],
        "video_metadata": {"fps": FPS, "anything": ["users", "add"]},
        "processing_metadata": {"tool": "extractor"},
    }
    path = write_manifest(frame_files, manifest)
    for shown in (str(path), "frames/manifest.json"):
        response = embed(client, {"type": "frames_batch", "frames_manifest_path": shown})
        assert frames_of(vectors_of(response), reference) == [40, 7, 3, 90]


def test_bare_list_manifest(client, reference, frame_files):
    path = write_manifest(frame_files, [entry(5, "f_5.png"), entry(3, "f_3.png")], "list.json")
    response = embed(client, {"type": "frames_batch", "frames_manifest_path": str(path)})
    assert frames_of(vectors_of(response), reference) == [5, 3]


def test_manifest_crop_bbox_crops(client, place, frame_files, decoded):
    box = [8, 4, 40, 30]
    manifest = {"video_path": str(place.root / "clip.mp4"),
                "frames": [entry(5, "f_5.png", type="detected_crop", crop_bbox=box, crop_index=0,
                                 is_detected_crop=True, detection_confidence=0.9),
                           entry(5, None, type="detected_crop", crop_bbox=box)]}
    path = write_manifest(frame_files, manifest, "crops.json")
    vectors = vectors_of(embed(client, {"type": "frames_batch", "frames_manifest_path": str(path)}))
    cropped = Image.fromarray(decoded[5]).crop(tuple(box))
    expected = vectors_of(embed(client, {"type": "image_base64", "image_base64": b64(encoded(cropped))}))
    uncropped = vectors_of(embed(client, {"type": "image_base64", "image_base64": png_b64(decoded[5])}))
    assert (unit_cosines(vectors, np.stack([expected, expected])) > 0.9999).all()
    assert (unit_cosines(vectors, np.stack([uncropped, uncropped])) < 0.999).all()


@pytest.mark.parametrize(
    "document, fragment",
    [
        ({"frames": [entry(-1, "f_3.png")]}, "frames.0.frame_number: Input should be greater than or equal to 0"),
        ({"frames": [{"frame_number": 1, "timestamp": 0.1, "image_path": "f_3.png"}]},
         "frames.0.type: Field required"),
        ({"frames": [entry(1, "f_3.png", type="thumbnail")]}, "frames.0.type"),
        ({"frames": [entry(1, "f_3.png", crop_bbox=[10, 0, 5, 8])]}, "frames.0.crop_bbox: Value error, must be"),
        ({"frames": [entry(1, "f_3.png", crop_bbox=[0, 0, 5])]}, "frames.0.crop_bbox"),
        ({"frames": [entry(1, "f_3.png", detection_confidence=1.5)]}, "frames.0.detection_confidence"),
        ({"frames": [entry(1, "f_3.png", frame_interval=0)]}, "frames.0.frame_interval"),
        ({"frames": []}, "frames: List should have at least 1 item"),
        ({"video_path": "clip.mp4"}, "frames: Field required"),
        ("just a string", "does not follow the FramesManifest schema"),
    ],
)
def test_invalid_manifests_are_422_with_the_reason(client, frame_files, document, fragment):
    path = write_manifest(frame_files, document, "invalid.json")
    response = embed(client, {"type": "frames_batch", "frames_manifest_path": str(path)})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"Invalid input data: frames manifest {path} ")
    assert fragment in response.json()["detail"]


def test_manifest_that_is_not_json_is_422(client, frame_files):
    path = frame_files / "broken.json"
    path.write_text('{"frames": [')
    response = embed(client, {"type": "frames_batch", "frames_manifest_path": str(path)})
    assert response.status_code == 422 and "is not valid JSON" in response.json()["detail"]


@pytest.mark.parametrize(
    "frames, video_path, status, detail",
    [
        ([entry(3, "f_999.png")], None, 404, "File not found: f_999.png"),
        ([entry(3, "/etc/hostname")], None, 403,
         "Access denied: /etc/hostname is outside the allowed video directories"),
        ([entry(3)], None, 422,
         "Invalid input data: frames[0] has no image_path and the manifest no video_path"),
        ([entry(3, "f_3.png"), entry(100)], "CLIP", 422,
         "Invalid input data: frames[1].frame_number 100 is out of range: the video has 100 frames"),
        ([entry(3, "f_3.png", crop_bbox=[0, 0, 65, 10])], None, 422,
         "Invalid input data: frames[0]: crop_bbox [0, 0, 65, 10] exceeds the 64x48 image"),
        ([entry(1, None)], "missing.mp4", 404, "File not found: missing.mp4"),
    ],
    ids=["missing-image", "image-outside", "no-video", "frame-out-of-range", "crop-too-large",
         "missing-video"],
)
def test_manifest_entry_errors(client, place, frame_files, frames, video_path, status, detail):
    document = {"frames": frames}
    if video_path is not None:
        document["video_path"] = str(place.root / "clip.mp4") if video_path == "CLIP" else video_path
    path = write_manifest(frame_files, document, "entries.json")
    response = embed(client, {"type": "frames_batch", "frames_manifest_path": str(path)})
    assert (response.status_code, response.json()["detail"]) == (status, detail)


def test_manifest_paths_are_confined(client, place):
    outside = write_manifest(place.outside, {"frames": [entry(1, str(place.root / "frames" / "f_3.png"))]})
    missing = embed(client, {"type": "frames_batch", "frames_manifest_path": "/data/manifests/frames.json"})
    escaped = embed(client, {"type": "frames_batch", "frames_manifest_path": str(outside)})
    absent = embed(client, {"type": "frames_batch", "frames_manifest_path": "frames/absent.json"})
    assert (missing.status_code, escaped.status_code) == (403, 403)
    assert (absent.status_code, absent.json()) == (404, {"detail": "File not found: frames/absent.json"})


def test_manifest_over_the_cap_is_422(client, frame_files):
    path = write_manifest(frame_files, [entry(3, "f_3.png")] * (CAP + 1), "long.json")
    response = embed(client, {"type": "frames_batch", "frames_manifest_path": str(path)})
    assert response.status_code == 422
    assert f"over the limit of {CAP} frames per request" in response.json()["detail"]


# --- models without images, streaming, cancellation -----------------------------------------

def test_text_only_model_refuses_video_inputs(api_client, settings, use_pipeline):
    from models.catalogue import find_model

    text_model = find_model("QwenText/qwen3-embedding-0.6b")
    use_pipeline(pipeline_on_the_service_encoder(text_model, None, settings))
    for item in ({"type": "video_file", "video_path": "clip.mp4"},
                 {"type": "frames_batch", "frames_manifest_path": "m.json"},
                 {"type": "video_frames", "video_frames": [{"type": "image_base64", "image_base64": "AAAA"}]}):
        response = embed(api_client, item, model=text_model.id)
        assert (response.status_code, response.json()) == (
            400, {"detail": "Video inputs are not supported by the active model"})


@pytest.fixture(scope="module")
def runner(tiny_entry, service_module):
    return service_module.MODEL.adapter.load_runner(tiny_entry)


def test_frames_stream_to_the_encoder_in_batches(runner, preparer, settings, place, reference):
    from embedding_server.http_api.schemas import VideoFileInput
    from embedding_server.media.video_inputs import VideoEmbedder

    batches = []

    async def encode_images(pixels: np.ndarray, name_of: Callable[[int], str]) -> np.ndarray:
        batches.append(len(pixels))
        return await asyncio.to_thread(runner.encode_images, pixels)

    embedder = VideoEmbedder(encode_images, _no_images, settings)
    item = VideoFileInput(type="video_file", video_path="clip.mp4", segment_config={"num_frames": 20})
    vectors = asyncio.run(embedder.embed(item, preparer))
    assert batches == [BATCH, BATCH, 20 - 2 * BATCH]
    assert frames_of(vectors, reference) == [int(k * 99 / 19 + 0.5) for k in range(20)]


async def _no_images(item):
    raise AssertionError("video inputs other than video_frames never take the image path")


def test_cancelled_request_removes_its_temp_file(preparer, settings, place):
    from embedding_server.http_api.schemas import VideoBase64Input
    from embedding_server.media.video_inputs import VideoEmbedder

    async def scenario() -> list[tuple[str, int]]:
        reached = asyncio.Event()

        async def stuck_encoder(pixels: np.ndarray, name_of: Callable[[int], str]) -> np.ndarray:
            reached.set()
            await asyncio.Event().wait()  # the client goes away before this returns
            raise AssertionError("unreachable")

        embedder = VideoEmbedder(stuck_encoder, _no_images, settings)
        item = VideoBase64Input(type="video_base64", video_base64=b64(place.clip.read_bytes()))
        task = asyncio.create_task(embedder.embed(item, preparer))
        await reached.wait()
        during = [(path.name, path.stat().st_mode & 0o777) for path in sorted(place.temp.rglob("*"))]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return during

    during = asyncio.run(scenario())
    assert len(during) == 2 and during[0][0].startswith("embedding-video-")
    assert [mode for _, mode in during] == [0o700, 0o600]
    assert list(place.temp.iterdir()) == []
