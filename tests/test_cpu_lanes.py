"""Sliced CPU batches: the same vectors as whole batches, in order; small batches run whole on
every thread, larger ones in single-threaded slices; only PyTorch-on-CPU runners are wrapped."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from samples import DISTINCT, random_image, smallest_gap, unit_cosines

from models.catalogue import find_model
from runners.contract import EmbeddingRunner
from runners.backends.cpu_lanes import SlicedRunner, sliced_on_cpu
from runners.families.open_clip import OPEN_CLIP

TEXTS = [f"caption number {index} of a {'long ' * index}scene" for index in range(9)]
# Sixteen texts of 1 to 13 words, each one word repeated (a word the stand-in tokenizers know),
# so that even the shortest context holds what tells any two apart.
NOUNS = "cat dog bird car street city night sky sea river mountain tree flower man woman child".split()
FAMILY_TEXTS = [" ".join([noun] * (1 + 3 * (index % 5))) for index, noun in enumerate(NOUNS)]


class RecordingRunner(EmbeddingRunner):
    """A real runner that records, per call, its batch size, PyTorch's thread count on the
    calling thread and that thread's name."""

    def __init__(self, runner: EmbeddingRunner) -> None:
        self._runner = runner
        self.dimension = runner.dimension
        self.calls: list[tuple[int, int, str]] = []
        self._lock = threading.Lock()

    def _record(self, size: int) -> None:
        with self._lock:
            self.calls.append((size, torch.get_num_threads(), threading.current_thread().name))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self._record(len(texts))
        return self._runner.encode_text(texts)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        self._record(len(pixels))
        return self._runner.encode_images(pixels)


@pytest.fixture(scope="module")
def runner(tiny_entry: Path) -> EmbeddingRunner:
    return OPEN_CLIP.load_runner(tiny_entry)


@pytest.fixture(scope="module")
def pixels(tiny_entry: Path) -> np.ndarray:
    prepare = OPEN_CLIP.load_image_preparer(tiny_entry)
    return np.stack([prepare(random_image(64 + 8 * index, 48, seed=index)) for index in range(9)])


@pytest.mark.parametrize("size", [1, 3, 4, 5, 9])
def test_sliced_batches_give_the_whole_batches_vectors_in_order(runner, pixels, size):
    sliced = SlicedRunner(runner, lanes=2, threads=2)
    for encode, whole_encode, batch in ((sliced.encode_text, runner.encode_text, TEXTS[:size]),
                                        (sliced.encode_images, runner.encode_images, pixels[:size])):
        vectors, expected = encode(batch), whole_encode(batch)
        assert vectors.shape == expected.shape == (size, runner.dimension)
        assert (unit_cosines(vectors, expected) > 0.99999).all()
        if size > 1:  # distinct inputs, so a swapped row would show
            assert smallest_gap(expected) > DISTINCT


def test_small_batches_run_whole_on_all_threads_larger_ones_in_single_threaded_slices(runner, pixels):
    recording = RecordingRunner(runner)
    sliced = SlicedRunner(recording, lanes=2, threads=2)
    sliced.encode_text(TEXTS[:3])
    assert recording.calls == [(3, 2, threading.current_thread().name)]  # on the caller's thread
    recording.calls.clear()
    sliced.encode_text(TEXTS[:9])
    assert sorted(size for size, _, _ in recording.calls) == [4, 5]
    assert all(threads == 1 and name.startswith("batch-slice") for _, threads, name in recording.calls)
    recording.calls.clear()
    # A thread started after the slices lowered PyTorch's default still runs a lone batch on
    # every thread, itself (as the Encoder's API worker threads, which come and go, do).
    with ThreadPoolExecutor(1, "api-worker") as caller:
        caller.submit(sliced.encode_images, pixels[:1]).result()
    assert [(threads, name.startswith("api-worker")) for _, threads, name in recording.calls] == [(2, True)]


def test_only_pytorch_runners_on_the_cpu_with_two_lanes_are_sliced(runner):
    assert isinstance(sliced_on_cpu(runner, "CPU", lanes=2, threads=2), SlicedRunner)
    assert sliced_on_cpu(runner, "CPU", lanes=1, threads=2) is runner
    assert sliced_on_cpu(runner, "CPU", lanes=2, threads=1) is runner  # a lane needs a thread

    class OpenVinoLike(RecordingRunner):
        backend = "openvino"

    other = OpenVinoLike(runner)
    assert sliced_on_cpu(other, "CPU", lanes=2, threads=2) is other


@pytest.mark.parametrize("model_id", ["SigLIP/siglip2-vit-b-16", "MobileCLIP/mobileclip_s0",
                                      "CN-CLIP/cn-clip-vit-b-16", "Blip2/blip2_transformers",
                                      "QwenText/qwen3-embedding-0.6b"])
def test_every_family_gives_the_same_vectors_sliced_with_its_tokenizer_shared(model_id, tiny_import):
    """Slices of one batch tokenise and run on two threads at once with the same tokenizer
    and model; several sliced calls at once (text and image batches overlap in the Encoder)
    must neither fail nor change a vector, nor swap two (every two differ)."""
    model = find_model(model_id)
    adapter = model.adapter
    entry = tiny_import(model_id)
    runner = adapter.load_runner(entry)
    sliced = SlicedRunner(runner, lanes=2, threads=2)
    expected = runner.encode_text(FAMILY_TEXTS)
    assert smallest_gap(expected) > DISTINCT
    with ThreadPoolExecutor(3) as callers:
        results = list(callers.map(lambda _: sliced.encode_text(FAMILY_TEXTS), range(6)))
    for vectors in results:
        assert (unit_cosines(vectors, expected) > 0.99999).all()
    if model.supports_images:
        prepare = adapter.load_image_preparer(entry)
        pixels = np.stack([prepare(random_image(80, 60, seed=index)) for index in range(5)])
        expected = runner.encode_images(pixels)
        assert smallest_gap(expected) > DISTINCT
        assert (unit_cosines(sliced.encode_images(pixels), expected) > 0.99999).all()
