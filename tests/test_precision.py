"""EMBEDDING_PRECISION on PyTorch: exact keeps IEEE float32 math, fast computes the matmuls in
the CPU's native bf16 where it has it (else float32), close to the exact vectors; int8 is
refused without OpenVINO. (OpenVINO's side: tests/test_openvino.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from embedding_server import composition
from embedding_server.settings import Settings, SettingsError, load_settings
from models.catalogue import find_model
from runners.backends import torch_precision
from samples import random_image, unit_cosines
from helpers import TEST_MODEL_ID

FAST_PARITY = 0.999  # smallest cosine of fast to exact vectors on the tiny random CLIP
TEXTS = ["a photo of a cat", "two dogs playing in the snow", "一只猫", "x"]


@pytest.fixture
def restored_math_mode() -> Iterator[None]:
    """The process's float32 math mode as it was before the test (load_runner sets it)."""
    saved = torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision
    yield
    torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision = saved


def encoder_runner(tiny_entry: Path, precision: str):
    entry = composition.StoredEntry(tiny_entry, "clip-vit-b-32:test", {})
    return composition.load_runner(find_model(TEST_MODEL_ID), entry, Settings(precision=precision))


def vectors(runner, tiny_entry: Path) -> tuple[np.ndarray, np.ndarray]:
    prepare = find_model(TEST_MODEL_ID).adapter.load_image_preparer(tiny_entry)
    pixels = np.stack([prepare(random_image(seed=seed)) for seed in range(5)])
    return runner.encode_text(TEXTS), runner.encode_images(pixels)


def test_fast_is_the_default(monkeypatch):
    monkeypatch.delenv("EMBEDDING_PRECISION")  # the test session's is exact
    assert Settings().precision == "fast"


def test_exact_and_fast_math_modes(tiny_entry: Path, restored_math_mode: None):
    exact = encoder_runner(tiny_entry, "exact")
    assert (exact.precision, torch.backends.mkldnn.matmul.fp32_precision) == ("f32", "ieee")
    exact_vectors = vectors(exact, tiny_entry)

    fast = encoder_runner(tiny_entry, "fast")
    native = torch_precision.native_bf16()
    assert fast.precision == ("bf16" if native else "f32")
    assert torch.backends.mkldnn.matmul.fp32_precision == ("bf16" if native else "ieee")
    assert torch.backends.mkldnn.conv.fp32_precision == ("bf16" if native else "ieee")
    for fast_rows, exact_rows in zip(vectors(fast, tiny_entry), exact_vectors):
        assert (unit_cosines(fast_rows, exact_rows) > FAST_PARITY).all()
        # bf16 rounds the matmuls' inputs: the vectors move, so the mode is in force.
        assert not native or not np.array_equal(fast_rows, exact_rows)


def test_fast_on_a_cpu_without_native_bf16_stays_float32(monkeypatch, restored_math_mode: None):
    monkeypatch.setattr(torch_precision, "native_bf16", lambda: False)
    assert torch_precision.apply("fast", torch.device("cpu")) == "f32"
    assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"


def test_the_replaced_openvino_precision_variable_stops_start_up(monkeypatch):
    monkeypatch.setenv("EMBEDDING_OV_INFERENCE_PRECISION", "bf16")
    with pytest.raises(SettingsError, match="EMBEDDING_OV_INFERENCE_PRECISION is no longer read; set EMBEDDING_PRECISION"):
        load_settings()


def test_int8_without_openvino_is_a_configuration_error():
    with pytest.raises(ValueError, match="EMBEDDING_USE_OV=true"):
        Settings(precision="int8")
    assert Settings(precision="INT8", use_ov=True).precision == "int8"
