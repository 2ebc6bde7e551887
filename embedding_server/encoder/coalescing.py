"""Merge the entry service's concurrent Encoder calls into one call at a time.

Every call to the Encoder costs a round trip through two HTTP stacks and two serialisations,
several milliseconds of CPU in all, which on a small machine competes with the forward pass
itself (measured in bench/RESULTS.md, "Throughput tuning"). A :class:`Coalescer` keeps
at most one call of its kind in flight: the first request goes out at once (no added latency
when traffic is light), and requests arriving meanwhile wait and leave together, as one
batch, when that call returns. This is where the server's requests are batched: the Encoder's
adaptive batcher sees one call at a time from each entry worker, so it merges nothing with
one worker and little with several (README, "Architecture").

Each call's item count is observed by ``observe_items`` and each request's wait before its
call left by ``observe_wait``; in the served entry service those are the
``embedding_coalesced_items`` and ``embedding_queue_wait_seconds`` histograms
(embedding_server/encoder/metrics.py), where merging and its cost show on ``/metrics``.

A request that has waited longer than ``max_wait_s`` when its batch is formed is shed with a
503 instead of being sent; a request whose client went away is dropped before it costs work.

One request must not fail the others it was merged with: when a merged call raises, its
requests are sent again in halves, down to the requests that fail alone, which alone get the
error. Errors about the Encoder itself (overloaded, not up, timed out: an :class:`ApiError`
from the connection) are the same for every request and are answered to all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

import numpy as np
from prometheus_client import Histogram

from embedding_server.encoder.metrics import COALESCED_ITEMS, QUEUE_WAIT
from embedding_server.encoder.protocol import EncoderClient
from embedding_server.http_api.errors import ENCODER_OVERLOADED, ApiError
from embedding_server.http_api.schemas import ModelInfo
from embedding_server.settings import Settings

Part = TypeVar("Part")


@dataclass
class _Pending(Generic[Part]):
    part: Part
    size: int
    since: float
    future: asyncio.Future[np.ndarray]


class Coalescer(Generic[Part]):
    """Joins the parts of waiting requests into batches of at most ``max_items`` items
    (a larger single part goes alone) and sends them through ``encode`` one batch at a time.

    ``encode`` returns one row per item, in order; each request gets back its own rows.
    ``observe_items``, if given, is told the number of items of every call sent, and
    ``observe_wait`` the seconds each request sent waited for its call.
    """

    def __init__(self, encode: Callable[[Part], Awaitable[np.ndarray]],
                 join: Callable[[Sequence[Part]], Part], max_items: int, max_wait_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 observe_items: Callable[[int], None] | None = None,
                 observe_wait: Callable[[float], None] | None = None) -> None:
        self._encode = encode
        self._join = join
        self._max_items = max_items
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._observe_items = observe_items
        self._observe_wait = observe_wait
        self._queue: deque[_Pending[Part]] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, part: Part, size: int) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(part, size, self._clock(), future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return await future

    async def _send_all(self) -> None:
        try:
            while batch := self._next_batch():
                await self._send(batch)
        finally:
            self._sender = None

    def _next_batch(self) -> list[_Pending[Part]]:
        """Waiting requests in arrival order, shedding the expired and skipping the cancelled."""
        batch: list[_Pending[Part]] = []
        items = 0
        now = self._clock()
        deadline = now - self._max_wait_s
        while self._queue and (not batch or items + self._queue[0].size <= self._max_items):
            pending = self._queue.popleft()
            if pending.future.done():  # cancelled: the client went away or timed out
                continue
            if pending.since < deadline:
                pending.future.set_exception(ApiError(503, ENCODER_OVERLOADED))
                continue
            batch.append(pending)
            items += pending.size
            if self._observe_wait is not None:
                self._observe_wait(now - pending.since)
        return batch

    async def _send(self, batch: list[_Pending[Part]]) -> None:
        if self._observe_items is not None:
            self._observe_items(sum(pending.size for pending in batch))
        try:
            rows = await self._encode(self._join([pending.part for pending in batch]))
        except Exception as error:
            waiting = [pending for pending in batch if not pending.future.done()]
            if len(waiting) > 1 and not isinstance(error, ApiError):  # may be one request's fault
                middle = len(waiting) // 2
                await self._send(waiting[:middle])
                await self._send(waiting[middle:])
                return
            for pending in waiting:
                pending.future.set_exception(error)
            return
        except asyncio.CancelledError:  # shutting down
            for pending in batch:
                pending.future.cancel()
            raise
        start = 0
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(rows[start:start + pending.size])
            start += pending.size


def _join_texts(parts: Sequence[list[str]]) -> list[str]:
    return [text for part in parts for text in part]


def _join_pixels(parts: Sequence[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class CoalescingEncoder:
    """An ``EncoderClient`` whose text, image and token-count calls each go through a
    :class:`Coalescer`."""

    def __init__(self, encoder: EncoderClient, settings: Settings,
                 items_per_call: Histogram = COALESCED_ITEMS, queue_wait: Histogram = QUEUE_WAIT) -> None:
        """``items_per_call`` and ``queue_wait`` (labelled by ``modality``) observe the size of
        every call and the wait of every request."""
        self._encoder = encoder
        max_wait_s = settings.max_latency_ms / 1000
        self._texts = Coalescer(encoder.encode_text, _join_texts, settings.text_max_batch_size, max_wait_s,
                                observe_items=items_per_call.labels(modality="text").observe,
                                observe_wait=queue_wait.labels(modality="text").observe)
        self._images = Coalescer(encoder.encode_images, _join_pixels, settings.image_max_batch_size,
                                 max_wait_s, observe_items=items_per_call.labels(modality="image").observe,
                                 observe_wait=queue_wait.labels(modality="image").observe)
        self._token_counts = Coalescer(encoder.count_tokens, _join_texts, settings.text_max_batch_size, max_wait_s)

    async def encode_text(self, texts: list[str]) -> np.ndarray:
        return await self._texts(texts, len(texts))

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return await self._images(pixels, len(pixels))

    async def count_tokens(self, texts: list[str]) -> np.ndarray:
        return await self._token_counts(texts, len(texts))

    async def info(self) -> ModelInfo:
        return await self._encoder.info()
