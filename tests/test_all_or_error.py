"""``all_or_error``: concurrent calls whose first failure cancels the rest, all of them, and
reaches the caller as itself."""

from __future__ import annotations

import asyncio

import pytest

from embedding_server.http_api.errors import InvalidInput
from embedding_server.media.blocking import all_or_error


def test_the_results_come_back_in_order():
    async def value(number: int) -> int:
        await asyncio.sleep(0)
        return number

    assert asyncio.run(all_or_error(*(value(number) for number in range(5)))) == [0, 1, 2, 3, 4]


def test_a_failure_cancels_every_sibling_and_is_raised_unwrapped():
    async def scenario() -> list[asyncio.Task]:
        siblings: list[asyncio.Task] = []

        async def fails() -> None:
            await asyncio.sleep(0)
            raise InvalidInput("input[1]: not an image")

        async def waits_forever() -> None:
            siblings.append(asyncio.current_task())
            await asyncio.Event().wait()

        with pytest.raises(InvalidInput, match="not an image"):
            await all_or_error(waits_forever(), fails(), waits_forever())
        return siblings

    siblings = asyncio.run(scenario())
    assert len(siblings) == 2 and all(task.cancelled() for task in siblings)


def test_a_caller_cancelled_while_the_siblings_wind_down_leaves_none_running():
    async def scenario() -> list[bool]:
        siblings: list[asyncio.Task] = []
        release = asyncio.Event()

        async def fails() -> None:
            await asyncio.sleep(0)
            raise InvalidInput("bad")

        async def slow_to_cancel() -> None:
            siblings.append(asyncio.current_task())
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()  # its clean-up takes a while
                raise

        async def worker() -> None:
            siblings.append(asyncio.current_task())
            await asyncio.Event().wait()

        caller = asyncio.ensure_future(all_or_error(fails(), slow_to_cancel(), worker()))
        while not (len(siblings) == 2 and siblings[0].cancelling()):  # a loop turn at a time
            await asyncio.sleep(0)
        caller.cancel()  # the client goes away while the first sibling cleans up
        release.set()
        with pytest.raises((asyncio.CancelledError, InvalidInput)):
            await caller
        await asyncio.wait(siblings, timeout=5)  # a bound: a sibling never cancelled would never end
        return [task.cancelled() for task in siblings]  # before asyncio.run cancels what is left

    assert asyncio.run(scenario()) == [True, True]
