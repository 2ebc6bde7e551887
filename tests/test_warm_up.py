"""The Encoder's warm-up: one forward pass per modality the model embeds, with the pixels the
entry's own preparer makes, before the Encoder answers anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedding_server.composition import load_preparer, warm_up
from helpers import TEST_MODEL_ID


class RecordingRunner:
    """Records what it is asked to embed and answers unit rows."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.calls.append(("text", list(texts)))
        return np.ones((len(texts), 4), dtype=np.float32) / 2

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(("image", (pixels.shape, pixels.dtype)))
        return np.ones((len(pixels), 4), dtype=np.float32) / 2


def test_an_image_model_gets_one_text_and_one_image_pass_of_its_input_size(tiny_entry: Path):
    from models.catalogue import find_model

    model = find_model(TEST_MODEL_ID)
    runner = RecordingRunner()
    seconds = warm_up(runner, load_preparer(model, tiny_entry), model.image_size)
    assert runner.calls == [("text", ["warm-up"]), ("image", ((1, 224, 224, 3), np.dtype(np.uint8)))]
    assert set(seconds) == {"text", "image"} and all(value >= 0 for value in seconds.values())


def test_a_text_only_model_gets_a_text_pass_only():
    runner = RecordingRunner()
    assert set(warm_up(runner, None, 0)) == {"text"}
    assert runner.calls == [("text", ["warm-up"])]


def test_the_encoder_warms_up_before_it_can_answer(service_module, monkeypatch):
    """Constructing the Encoder (what BentoML does before it serves) runs the passes, with the
    runner it will serve with."""
    from embedding_server import composition

    warmed = []
    real = composition.warm_up

    def recording(runner, preparer, image_size):
        warmed.append((runner, preparer is not None, image_size))
        return real(runner, preparer, image_size)

    monkeypatch.setattr(composition, "warm_up", recording)
    encoder = service_module.Encoder.inner()
    assert warmed == [(encoder.runner, True, 224)]
