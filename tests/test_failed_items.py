"""An image the model fails on (the Encoder answers a NaN row for it) is named in every API's
terms: ``image``, ``video_frames[i]``, ``input[i]`` on ``/v1/embeddings``, ``candidates[i]``
on ``/rank``; the other images of the request are not blamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import TEST_MODEL_ID as MODEL
from helpers import in_process_pipeline
from samples import b64, encoded, random_image

GOOD = b64(encoded(random_image(seed=61)))
BLACK = b64(encoded(Image.new("RGB", (64, 64))))


class FailsOnBlack:
    """A runner that fails on all-black images: their rows are NaN, as the Encoder marks an
    item the model failed on."""

    def __init__(self, runner) -> None:
        self._runner = runner
        self.dimension = runner.dimension

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self._runner.encode_text(texts)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self._runner.count_tokens(texts)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        rows = self._runner.encode_images(pixels)
        rows[pixels.reshape(len(pixels), -1).max(axis=1) == 0] = np.nan
        return rows


@pytest.fixture
def failing_on_black(use_pipeline, tiny_entry: Path) -> None:
    from embedding_server.composition import load_preparer
    from models.catalogue import find_model

    model = find_model(MODEL)
    runner = FailsOnBlack(model.adapter.load_runner(tiny_entry))
    use_pipeline(in_process_pipeline(model, runner, load_preparer(model, tiny_entry)))


def image(data: str) -> dict:
    return {"type": "image_base64", "image_base64": data}


def documented(api_client, item: dict):
    return api_client.post("/embeddings", json={"model": MODEL, "input": item, "encoding_format": "float"})


def test_the_documented_api_names_the_image_and_the_frame(api_client, failing_on_black):
    alone = documented(api_client, image(BLACK))
    assert alone.json() == {"detail": "Invalid input data: image could not be embedded by the model"}
    frames = documented(api_client, {"type": "video_frames", "video_frames": [image(GOOD), image(BLACK)]})
    assert frames.json() == {"detail": "Invalid input data: video_frames[1] could not be embedded by the model"}
    assert documented(api_client, image(GOOD)).status_code == 200


def test_the_openai_route_names_the_input_item(api_client, failing_on_black):
    response = api_client.post("/v1/embeddings", json={
        "model": MODEL, "modality": "image", "input": [f"data:image/png;base64,{GOOD}", f"data:image/png;base64,{BLACK}"]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "input[1] could not be embedded by the model"


def test_rank_names_the_candidate(api_client, failing_on_black):
    response = api_client.post("/rank", json={"model": MODEL, "query": {"type": "text", "text": "a cat"},
                                              "candidates": [image(GOOD), image(GOOD), image(BLACK)]})
    assert response.json() == {"detail": "Invalid input data: candidates[2] could not be embedded by the model"}
