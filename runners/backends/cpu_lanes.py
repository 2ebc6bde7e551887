"""Run a PyTorch batch on the CPU as independent slices, one single-threaded slice per core.

PyTorch spreads each operator of a forward pass over its intra-op threads and joins them
after every operator. When anything else needs a core for a moment (the entry service
decoding the next images, the HTTP stacks), the thread on that core falls behind and the
others wait at the join, so a few per cent of stolen CPU cost far more in throughput.
Slices of a batch that each run on one thread do not wait for each other, and a batch
split into slices keeps most of its batching gain. Measured on 2 cores with ViT-B-32
(bench/RESULTS.md, "Throughput tuning"): two slices beat one two-thread batch by 10-35 %
under a little background load, and for text also on an idle machine.

A batch too small to split runs whole, on every thread, on the calling thread itself, so a
lone request is as fast as it would be without slicing: handing it to another thread and
back cost a wake-up each way (about 0.5-1 ms a request on a busy 2-core machine).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import TypeVar

import numpy as np
import torch

from runners.backends.devices import torch_device
from runners.contract import EmbeddingRunner, TextInputs

Batch = TypeVar("Batch", list[str], np.ndarray)
MIN_SLICE = 2  # rows; one-row slices lose more batching gain than they win (measured)


def _pinned_threads(threads: int) -> Callable[[], None]:
    """A thread-pool initializer that gives its thread ``threads`` intra-op threads.

    PyTorch's thread count is a per-thread OpenMP setting, initialised lazily from a global
    on a thread's first parallel operator; reading it first settles that initialisation, so
    the count set next stays whatever other threads set later."""
    def initialise() -> None:
        torch.get_num_threads()
        torch.set_num_threads(threads)
    return initialise


class SlicedRunner(EmbeddingRunner):
    """Wraps a CPU runner: batches of at least ``lanes * MIN_SLICE`` rows run as ``lanes``
    concurrent slices of ``threads // lanes`` threads each, smaller ones whole on ``threads``."""

    def __init__(self, runner: EmbeddingRunner, lanes: int, threads: int) -> None:
        self._runner = runner
        self.lanes = lanes
        self.dimension = runner.dimension
        self.backend = runner.backend
        self.device = runner.device
        self.precision = runner.precision
        self._pin_whole = _pinned_threads(threads)
        self._pinned = threading.local()  # set in each thread that has run a whole batch
        self._whole = threading.Lock()  # one whole batch at a time, as on one dedicated thread
        self._slices = ThreadPoolExecutor(lanes, "batch-slice", initializer=_pinned_threads(max(1, threads // lanes)))

    @property
    def text_inputs(self) -> TextInputs:
        """The wrapped runner's: counting tokens needs no lanes."""
        return self._runner.text_inputs

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self._run(self._runner.encode_text, texts)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return self._run(self._runner.encode_images, pixels)

    def _run(self, encode: Callable[[Batch], np.ndarray], batch: Batch) -> np.ndarray:
        if len(batch) < self.lanes * MIN_SLICE:
            with self._whole:
                if not getattr(self._pinned, "done", False):
                    self._pin_whole()  # this thread's intra-op threads: all of them
                    self._pinned.done = True
                return encode(batch)
        return np.concatenate(list(self._slices.map(encode, _slices(batch, self.lanes))))


def _slices(batch: Batch, parts: int) -> Sequence[Batch]:
    """``batch`` cut into ``parts`` consecutive slices whose sizes differ by at most one."""
    bounds = np.linspace(0, len(batch), parts + 1).round().astype(int)
    return [batch[start:end] for start, end in pairwise(bounds)]


def sliced_on_cpu(runner: EmbeddingRunner, device: str, lanes: int, threads: int) -> EmbeddingRunner:
    """``runner`` as a :class:`SlicedRunner` where that helps: PyTorch on the CPU with more than
    one lane and at least one thread per lane; otherwise ``runner`` itself (GPUs, OpenVINO,
    which schedules its own streams)."""
    lanes = min(lanes, threads)
    if runner.backend != "pytorch" or torch_device(device).type != "cpu" or lanes < 2:
        return runner
    return SlicedRunner(runner, lanes, threads)
