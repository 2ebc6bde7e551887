"""The open_clip adapter with CLIP: parity with open_clip, --from-dir and full-size imports
(pixel-level preprocessing: ``test_preparers.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from models.catalogue import find_model
from importer.store import import_model
from runners.contract import WeightSource
from runners.families.open_clip import OPEN_CLIP, WEIGHTS_FILE
from samples import (
    DISTINCT,
    distinct_images,
    random_image,
    reference_images,
    reference_text,
    smallest_gap,
    unit_cosines,
)

VIT_B_32_PARAMETERS = 151_277_313  # open_clip ViT-B-32, as published for OpenAI's CLIP ViT-B/32


def test_runner_batches_equal_open_clip(tiny_entry, reference_clip):
    runner = OPEN_CLIP.load_runner(tiny_entry)
    preparer = OPEN_CLIP.load_image_preparer(tiny_entry)
    images = [*distinct_images(), *(random_image(200 + 10 * i, 150, seed=i) for i in range(3))]
    vectors = runner.encode_images(np.stack([preparer(image) for image in images]))
    expected = reference_images(reference_clip, images)
    assert vectors.dtype == np.float32 and vectors.shape == (len(images), 512)
    assert (unit_cosines(vectors, expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT
    texts = ["short", "a much longer caption " * 30, "日本語のテキスト"]
    expected = reference_text(reference_clip, texts)
    assert (unit_cosines(runner.encode_text(texts), expected) > 0.9999).all()
    assert smallest_gap(expected) > DISTINCT


def test_from_dir_with_an_open_clip_folder(tiny_entry, tmp_path, reference_clip, isolated_model_store):
    folder = tmp_path / "download"
    shutil.copytree(tiny_entry, folder, ignore=shutil.ignore_patterns("model.yaml"))
    entry = import_model(find_model("CLIP/clip-vit-b-32"), WeightSource("dir", path=folder))
    assert entry.info.labels["weights"] == "pretrained"
    assert Path(entry.path).is_relative_to(isolated_model_store)
    runner = OPEN_CLIP.load_runner(Path(entry.path))
    assert unit_cosines(runner.encode_text(["a cat"]), reference_text(reference_clip, ["a cat"]))[0] > 0.9999


def test_full_size_random_import_and_bare_checkpoint_from_dir(tmp_path, isolated_model_store):
    model = find_model("CLIP/clip-vit-b-32")
    random_entry = import_model(model, WeightSource("random"))
    assert random_entry.info.labels["variant"] == "full"
    assert random_entry.info.metadata["parameters"] == VIT_B_32_PARAMETERS
    download = tmp_path / "download"
    download.mkdir()
    shutil.copy(Path(random_entry.path) / WEIGHTS_FILE, download / "checkpoint.safetensors")
    imported = import_model(model, WeightSource("dir", path=download))
    assert imported.info.metadata["parameters"] == VIT_B_32_PARAMETERS
    text = ["the same weights give the same vector"]
    first = OPEN_CLIP.load_runner(Path(random_entry.path)).encode_text(text)
    second = OPEN_CLIP.load_runner(Path(imported.path)).encode_text(text)
    assert unit_cosines(first, second)[0] > 0.9999
