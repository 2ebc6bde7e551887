"""Coalescing of concurrent Encoder calls: batching, item cap, shedding, cancellation, errors,
each caller's own rows, and the items-per-call metric."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from embedding_server.encoder.coalescing import Coalescer, CoalescingEncoder
from embedding_server.http_api.errors import ENCODER_OVERLOADED, ApiError
from embedding_server.encoder.metrics import ITEM_BUCKETS
from embedding_server.settings import Settings
from prometheus_text import observations_above, samples


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


def spelt(texts: list[str]) -> np.ndarray:
    """One row per text that spells the text (its UTF-8 bytes, zero-padded): rows identify inputs."""
    return np.array([np.frombuffer(text.encode().ljust(24, b"\0"), dtype=np.uint8) for text in texts],
                    dtype=np.float32)


class IdentifyingEncoder:
    """An ``EncoderClient`` whose rows are functions of the input (texts spelt out, images'
    pixels flattened) and that fails any call holding the text ``BAD``. Calls wait for ``gate``;
    the items of each call are recorded per modality."""

    BAD = "bad input"

    def __init__(self) -> None:
        self.sizes: dict[str, list[int]] = {"text": [], "image": []}
        self.token_calls: list[int] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def encode_text(self, texts: list[str]) -> np.ndarray:
        await self._computing("text", len(texts))
        if self.BAD in texts:
            raise ValueError("the tokenizer failed")
        return spelt(texts)

    async def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        await self._computing("image", len(pixels))
        return pixels.reshape(len(pixels), -1).astype(np.float32)

    async def count_tokens(self, texts: list[str]) -> np.ndarray:
        """A text's "token count" is its length in characters."""
        self.token_calls.append(len(texts))
        self.started.set()
        await self.gate.wait()
        return np.array([len(text) for text in texts])

    async def _computing(self, modality: str, items: int) -> None:
        self.sizes[modality].append(items)
        self.started.set()
        await self.gate.wait()


async def queued_behind_one_call(encoder: IdentifyingEncoder, calls: list) -> list:
    """Run the first of ``calls`` (coroutines) until its Encoder call is in flight, queue the
    others behind it, then let the Encoder answer: results (or errors) in order."""
    encoder.gate.clear()
    encoder.started.clear()
    first = asyncio.create_task(calls[0])
    await encoder.started.wait()
    waiting = [asyncio.create_task(call) for call in calls[1:]]
    await asyncio.sleep(0)  # one loop turn: the waiting calls enqueue themselves (no timing)
    encoder.gate.set()
    return await asyncio.gather(first, *waiting, return_exceptions=True)


def caller_texts(caller: int) -> list[str]:
    """1 to 5 texts of caller ``caller``, each naming the caller and its position."""
    return [f"caller {caller} item {k}" for k in range(1 + caller % 5)]


def test_concurrent_callers_each_get_exactly_their_own_rows():
    async def scenario() -> None:
        encoder = IdentifyingEncoder()
        batcher = Coalescer(encoder.encode_text, join, max_items=8, max_wait_s=60.0)
        parts = [caller_texts(caller) for caller in range(40)]
        results = await queued_behind_one_call(encoder, [batcher(part, len(part)) for part in parts])
        for part, rows in zip(parts, results):
            assert np.array_equal(rows, spelt(part))
        sizes = encoder.sizes["text"]
        assert sizes[0] == 1 and max(sizes) == 8 and len(sizes) < len(parts)  # merged, up to the cap
        assert sum(sizes) == sum(map(len, parts))

    asyncio.run(scenario())


def test_callers_merged_with_a_failing_one_get_their_own_rows_after_the_retry_in_halves():
    async def scenario() -> None:
        encoder = IdentifyingEncoder()
        observed: list[int] = []
        batcher = Coalescer(encoder.encode_text, join, max_items=64, max_wait_s=60.0,
                            observe_items=observed.append)
        parts = [caller_texts(caller) for caller in range(12)]
        parts[7] = ["caller 7 item 0", IdentifyingEncoder.BAD]
        results = await queued_behind_one_call(encoder, [batcher(part, len(part)) for part in parts])
        assert isinstance(results[7], ValueError)
        for caller, (part, rows) in enumerate(zip(parts, results)):
            if caller != 7:
                assert np.array_equal(rows, spelt(part)), caller
        sizes = encoder.sizes["text"]
        assert observed == sizes  # every call is observed, the halves included
        assert sizes[1] == sum(map(len, parts[1:])) and len(sizes) > 4  # merged, then sent in halves
        assert 2 in sizes  # down to the failing caller alone

    asyncio.run(scenario())


def test_the_items_of_every_encoder_call_are_observed_per_modality():
    async def scenario() -> None:
        registry = CollectorRegistry()
        histogram = Histogram("items", "test", labelnames=["modality"], buckets=ITEM_BUCKETS, registry=registry)
        encoder = IdentifyingEncoder()
        coalescing = CoalescingEncoder(encoder, Settings(text_max_batch_size=8, image_max_batch_size=4), histogram)
        parts = [caller_texts(caller) for caller in range(6)]  # 1, 2, 3, 4, 5 and 1 texts
        texts = await queued_behind_one_call(encoder, [coalescing.encode_text(part) for part in parts])
        frames = [np.full((size, 2, 2, 3), caller, dtype=np.uint8) for caller, size in enumerate([1, 3, 1, 2])]
        images = await queued_behind_one_call(encoder, [coalescing.encode_images(pixels) for pixels in frames])
        for part, rows in zip(parts, texts):
            assert np.array_equal(rows, spelt(part))
        for pixels, rows in zip(frames, images):
            assert np.array_equal(rows, pixels.reshape(len(pixels), -1))
        assert encoder.sizes == {"text": [1, 5, 4, 6], "image": [1, 4, 2]}

        page = generate_latest(registry).decode()
        for modality, sizes in encoder.sizes.items():
            [count] = samples(page, "items_count", modality=modality)
            [total] = samples(page, "items_sum", modality=modality)
            assert (count.value, total.value) == (len(sizes), sum(sizes))
            for bound in ITEM_BUCKETS[:3]:
                assert observations_above(page, "items", bound, modality=modality) == sum(n > bound for n in sizes)

    asyncio.run(scenario())


def test_token_counts_are_coalesced_and_each_caller_gets_its_own():
    async def scenario() -> None:
        encoder = IdentifyingEncoder()
        coalescing = CoalescingEncoder(encoder, Settings(text_max_batch_size=8))
        parts = [caller_texts(caller) for caller in range(4)]  # 1, 2, 3 and 4 texts
        counts = await queued_behind_one_call(encoder, [coalescing.count_tokens(part) for part in parts])
        for part, rows in zip(parts, counts):
            assert rows.tolist() == [len(text) for text in part]
        assert encoder.token_calls == [1, 5, 4]  # the first alone, then the waiting ones up to the cap
        assert encoder.sizes["text"] == []

    asyncio.run(scenario())
