"""``POST /embeddings/frames``: the vectors ``POST /embeddings`` gives for a video input, and
each one's frame number and time in the video.

The answer's ``embedding`` is compared with ``/embeddings``'s for the same body, its frame
numbers with :func:`select_frames` for the test clip, and its times with ``frame / fps``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace

import bentoml
import numpy as np
import pytest
from fastapi import Depends
from PIL import Image

from helpers import TEST_MODEL_ID, embed, embedding_body, vectors_of
from local_http import serve_routes
from samples import b64, encoded
from video_samples import index_frame, index_video

FRAMES, FPS = 60, 25
VIDEO_TYPES = "'video_frames', 'video_url', 'video_base64', 'video_file', 'frames_batch'"
CONFIGS = [
    pytest.param({"num_frames": 5}, id="num-frames"),
    pytest.param({"startOffsetSec": 0.5, "clip_duration": 1, "extraction_fps": 4}, id="extraction-fps"),
    pytest.param({"frame_indexes": [40, 3, 3, 59, 0]}, id="frame-indexes-repeated-out-of-order"),
]


def frames_of(client, item: dict, encoding_format: str = "float", model: str = TEST_MODEL_ID):
    """``POST /embeddings/frames`` of one input item."""
    return client.post("/embeddings/frames", json=embedding_body(item, model, encoding_format))


def answer_of(response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("frame-times")
    root, temp = base / "root", base / "temp"
    root.mkdir()
    return SimpleNamespace(root=root, temp=temp, clip=index_video(root / "clip.mp4", FRAMES, FPS))


@pytest.fixture(scope="module")
def settings(place):
    from embedding_server.settings import Settings

    return Settings(video_root=place.root, video_temp_dir=place.temp, image_max_batch_size=4,
                    url_allowed_hosts=("127.0.0.1",))


def served_pipeline(model, preparer, settings):
    """A dependency giving a pipeline with these settings on the session service's own Encoder."""
    from embedding_server.encoder.client import EncoderConnection
    from embedding_server.pipeline import EmbeddingPipeline

    built = {}

    def pipeline(service=Depends(bentoml.get_current_service)) -> EmbeddingPipeline:
        if "pipeline" not in built:
            built["pipeline"] = EmbeddingPipeline(model, EncoderConnection(service.encoder), preparer, settings)
        return built["pipeline"]

    return pipeline


@pytest.fixture(scope="module")
def video_pipeline(service_module, settings):
    preparer = service_module.MODEL.adapter.load_image_preparer(Path(service_module.ENTRY.path))
    return served_pipeline(service_module.MODEL, preparer, settings)


@pytest.fixture
def client(api_client, video_pipeline, use_pipeline):
    use_pipeline(video_pipeline)
    return api_client


def video_item(transport: str, place, base_url: str, config: dict) -> dict:
    if transport == "video_file":
        return {"type": "video_file", "video_path": "clip.mp4", "segment_config": config}
    if transport == "video_url":
        return {"type": "video_url", "video_url": f"{base_url}/clip.mp4", "segment_config": config}
    return {"type": "video_base64", "video_base64": b64(place.clip.read_bytes()), "segment_config": config}


# --- decoded videos -------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("transport", ["video_file", "video_base64", "video_url"])
def test_decoded_videos_give_the_selected_frames_and_their_times(client, place, settings, transport, config):
    from embedding_server.http_api.schemas import SegmentConfig
    from embedding_server.media.frame_selection import select_frames

    with serve_routes({"/clip.mp4": (200, place.clip.read_bytes(), "video/mp4")}) as base:
        item = video_item(transport, place, base, config)
        answer = answer_of(frames_of(client, item))
        documented = vectors_of(embed(client, item))
    expected = select_frames(SegmentConfig(**config), FRAMES, FPS, settings)
    assert answer["model"] == TEST_MODEL_ID
    assert np.allclose(np.array(answer["embedding"], dtype=np.float32), documented, atol=1e-6)
    assert answer["frames"] == expected
    assert answer["timestamps"] == pytest.approx([frame / FPS for frame in expected])
    assert answer["fps"] == pytest.approx(FPS)


def test_the_default_segment_gives_every_frame_of_a_short_clip(client):
    answer = answer_of(frames_of(client, {"type": "video_file", "video_path": "clip.mp4"}))
    assert answer["frames"] == list(range(FRAMES))  # 60 frames, under the default 64
    assert answer["timestamps"][-1] == pytest.approx((FRAMES - 1) / FPS)


def test_base64_rows_are_the_documented_routes(client, place):
    item = {"type": "video_base64", "video_base64": b64(place.clip.read_bytes()),
            "segment_config": {"frame_indexes": [8, 2]}}
    answer = answer_of(frames_of(client, item, "base64"))
    documented = embed(client, item, "base64").json()["embedding"]
    floats = vectors_of(embed(client, item))
    assert answer["embedding"] == documented
    rows = np.stack([np.frombuffer(base64.b64decode(row), dtype="<f4") for row in answer["embedding"]])
    assert np.allclose(rows, floats, atol=1e-6)
    assert (answer["frames"], answer["fps"]) == ([8, 2], pytest.approx(FPS))


# --- frames that no video times -------------------------------------------------------------

def test_a_manifest_gives_its_own_frame_numbers_and_timestamps(client, place):
    Image.fromarray(index_frame(40)).save(place.root / "f_40.png")
    frames = [{"frame_number": 40, "timestamp": 1.6, "image_path": "f_40.png", "type": "full_frame"},
              {"frame_number": 7, "timestamp": 0.25, "type": "full_frame"},
              {"frame_number": 7, "timestamp": 12.5, "type": "detected_crop", "crop_bbox": [0, 0, 32, 24]}]
    (place.root / "manifest.json").write_text(json.dumps({"video_path": "clip.mp4", "frames": frames}))
    item = {"type": "frames_batch", "frames_manifest_path": "manifest.json"}
    answer = answer_of(frames_of(client, item))
    assert np.allclose(np.array(answer["embedding"], dtype=np.float32), vectors_of(embed(client, item)), atol=1e-6)
    assert (answer["frames"], answer["timestamps"], answer["fps"]) == ([40, 7, 7], [1.6, 0.25, 12.5], None)


def test_video_frames_are_numbered_by_position_and_untimed(client):
    item = {"type": "video_frames",
            "video_frames": [{"type": "image_base64", "image_base64": b64(encoded(Image.fromarray(index_frame(i))))}
                             for i in (5, 9, 5)]}
    answer = answer_of(frames_of(client, item))
    assert np.allclose(np.array(answer["embedding"], dtype=np.float32), vectors_of(embed(client, item)), atol=1e-6)
    assert (answer["frames"], answer["timestamps"], answer["fps"]) == ([0, 1, 2], [None] * 3, None)


# --- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("item, tag", [
    ({"type": "text", "text": "a cat"}, "text"),
    ({"type": "image_base64", "image_base64": "AAAA"}, "image_base64"),
    ({"type": "image_url", "image_url": "http://127.0.0.1/cat.png"}, "image_url"),
])
def test_text_and_image_inputs_are_422_naming_the_video_types(client, item, tag):
    response = frames_of(client, item)
    assert (response.status_code, response.json()) == (422, {"detail": (
        f"Invalid input data: input: Input tag '{tag}' found using 'type' does not match any of the "
        f"expected tags: {VIDEO_TYPES}")})


def test_another_model_is_400_with_the_documented_message(client):
    response = frames_of(client, {"type": "video_file", "video_path": "clip.mp4"}, model="CLIP/clip-vit-l-14")
    assert (response.status_code, response.json()) == (400, {"detail": (
        f"Model mismatch: requested model 'CLIP/clip-vit-l-14' does not match the currently loaded model "
        f"'{TEST_MODEL_ID}'. Please use the correct model name or restart the server with the desired model.")})


@pytest.mark.parametrize("item", [
    pytest.param({"type": "video_file", "video_path": "missing.mp4"}, id="missing-file"),
    pytest.param({"type": "video_file", "video_path": "../clip.mp4"}, id="escape"),
    pytest.param({"type": "video_file", "video_path": "clip.mp4", "segment_config": {"frame_indexes": [FRAMES]}},
                 id="index-out-of-range"),
    pytest.param({"type": "video_file", "video_path": "clip.mp4", "segment_config": {"num_frames": 2000}},
                 id="over-the-frame-cap"),
    pytest.param({"type": "video_base64", "video_base64": "@@@"}, id="bad-base64"),
    pytest.param({"type": "frames_batch", "frames_manifest_path": "absent.json"}, id="missing-manifest"),
])
def test_refusals_are_the_documented_routes(client, item):
    response, documented = frames_of(client, item), embed(client, item)
    assert response.status_code >= 400
    assert (response.status_code, response.json()) == (documented.status_code, documented.json())


def test_a_model_without_images_refuses_video_as_the_documented_route_does(api_client, service_module,
                                                                          settings, use_pipeline):
    use_pipeline(served_pipeline(service_module.MODEL, None, settings))
    item = {"type": "video_file", "video_path": "clip.mp4"}
    response, documented = frames_of(api_client, item), embed(api_client, item)
    assert (response.status_code, response.json()) == (documented.status_code, documented.json()) == (
        400, {"detail": "Video inputs are not supported by the active model"})
