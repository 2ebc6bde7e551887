"""Coalescing of concurrent Encoder calls: batching, item cap, shedding, cancellation, errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedding_server.coalescing import Coalescer
from embedding_server.errors import ENCODER_OVERLOADED, ApiError


class GatedEncoder:
    """Records each call's texts; a call returns (one row per text: its length) once opened."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(texts)
        self.started.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return np.array([[len(text)] for text in texts], dtype=np.float32)


def join(parts: list[list[str]]) -> list[str]:
    return [text for part in parts for text in part]


def coalescer(encoder: GatedEncoder, max_items: int = 8, clock=lambda: 0.0) -> Coalescer:
    return Coalescer(encoder, join, max_items=max_items, max_wait_s=1.0, clock=clock)


async def submit(batcher: Coalescer, texts: list[str]) -> asyncio.Task:
    task = asyncio.create_task(batcher(texts, len(texts)))
    await asyncio.sleep(0)  # let the task enqueue itself (one loop turn, no timing)
    return task


def test_requests_arriving_during_a_call_share_the_next_one():
    async def scenario() -> None:
        encoder = GatedEncoder()
        batcher = coalescer(encoder)
        first = await submit(batcher, ["a"])
        await encoder.started.wait()
        waiting = [await submit(batcher, ["bb"]), await submit(batcher, ["ccc", "dddd"])]
        assert encoder.calls == [["a"]]  # one call in flight; the others wait
        encoder.gate.set()
        assert (await first).tolist() == [[1]]
        assert [(await task).tolist() for task in waiting] == [[[2]], [[3], [4]]]
        assert encoder.calls == [["a"], ["bb", "ccc", "dddd"]]

    asyncio.run(scenario())


def test_batches_respect_the_item_cap_but_a_large_request_goes_alone():
    async def scenario() -> None:
        encoder = GatedEncoder()
        batcher = coalescer(encoder, max_items=3)
        first = await submit(batcher, ["a"])
        await encoder.started.wait()
        tasks = [await submit(batcher, texts) for texts in (["b", "c"], ["d", "e"], ["f"] * 5)]
        encoder.gate.set()
        await asyncio.gather(first, *tasks)
        assert [len(call) for call in encoder.calls] == [1, 2, 2, 5]

    asyncio.run(scenario())


def test_requests_that_waited_too_long_are_shed_with_503():
    async def scenario() -> None:
        now = [0.0]
        encoder = GatedEncoder()
        batcher = coalescer(encoder, clock=lambda: now[0])
        first = await submit(batcher, ["a"])
        await encoder.started.wait()
        stale = await submit(batcher, ["old"])
        now[0] = 5.0  # the Encoder call took longer than max_wait_s
        fresh = await submit(batcher, ["new"])
        encoder.gate.set()
        await first
        with pytest.raises(ApiError) as shed:
            await stale
        assert (shed.value.status_code, shed.value.detail) == (503, ENCODER_OVERLOADED)
        assert (await fresh).tolist() == [[3]]
        assert encoder.calls == [["a"], ["new"]]

    asyncio.run(scenario())


def test_cancelled_requests_are_not_sent():
    async def scenario() -> None:
        encoder = GatedEncoder()
        batcher = coalescer(encoder)
        first = await submit(batcher, ["a"])
        await encoder.started.wait()
        gone = await submit(batcher, ["client went away"])
        gone.cancel()
        encoder.gate.set()
        await first
        assert encoder.calls == [["a"]]

    asyncio.run(scenario())


def test_an_encoder_error_reaches_every_request_of_its_batch_only():
    async def scenario() -> None:
        encoder = GatedEncoder()
        batcher = coalescer(encoder)
        encoder.error = ApiError(503, "Model is not initialized")
        tasks = [await submit(batcher, ["a"]), await submit(batcher, ["b"])]
        encoder.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(result, ApiError) and result.status_code == 503 for result in results)
        encoder.error = None
        assert (await batcher(["again"], 1)).tolist() == [[5]]

    asyncio.run(scenario())
