"""Running blocking and concurrent work from the event loop without losing track of it."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


async def run_blocking(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a worker thread.

    A cancelled caller still waits for the thread to finish before the cancellation goes on,
    so the clean-up that follows (closing a reader, deleting a temporary file) never races it.
    """
    future = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await settle(future, cancel=False)  # cancelling it would not stop the thread
        raise


async def settle(task: asyncio.Future, *, cancel: bool) -> None:
    """Wait for ``task`` (cancelled first if ``cancel``); what it ends with is dropped."""
    if cancel:
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


async def all_or_error(*calls: Awaitable[T]) -> list[T]:
    """The results of ``calls``, run concurrently. When one fails, the others are cancelled
    and waited for, and its error is raised as it is (not in an ``ExceptionGroup``, so an
    API error still reaches the client as itself)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:  # all at once, before any wait: a second cancellation leaves none running
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: what failed after the first error is dropped
