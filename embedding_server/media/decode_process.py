"""One child process per video: probing and decoding that can really be stopped.

A thread running FFmpeg cannot be interrupted, so each video is probed, decoded and prepared
to the model's input in a child process (:mod:`.decode_worker`) that sends the prepared frames
back in chunks. The time the request spends waiting for the child is capped at
``video_decode_timeout_s`` (summed over all its waits; time spent embedding is not counted):
past it the child is killed and the request answered 504. A cancelled request kills it too,
and a child that dies (a decoder crash) fails its request with a 422 while the entry worker
lives on.

The child is forked from the entry worker: it inherits the opened, confined file descriptor
and the preparer without pickling, and starts in milliseconds. The entry worker decodes no
video itself (everything FFmpeg does happens in the children), and the child uses only
decord, PyAV, Pillow and numpy, so the usual hazard of forking a threaded process (a lock
held by another thread) does not reach the child's work.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from embedding_server.http_api.errors import ApiError, InvalidInput, located
from embedding_server.media import decode_worker
from embedding_server.media.blocking import run_blocking, settle
from embedding_server.media.local_files import OpenedFile
from embedding_server.media.video import FrameLimits
from embedding_server.settings import Settings
from runners.contract import ImagePreparer

_CONTEXT = multiprocessing.get_context("fork")


@dataclass(frozen=True)
class VideoInfo:
    """What the child learnt from the container, before decoding anything."""

    frame_count: int
    fps: float
    width: int
    height: int


class DecodingProcess:
    """The entry worker's handle on one video's child; use :meth:`open` and ``async with``."""

    def __init__(self, file: OpenedFile, preparer: ImagePreparer, settings: Settings) -> None:
        self._timeout = settings.video_decode_timeout_s
        self._time_left = self._timeout
        self._connection, child_end = _CONTEXT.Pipe(duplex=True)
        limits = FrameLimits(settings.max_image_pixels)
        self._process = _CONTEXT.Process(target=decode_worker.serve, daemon=True,
                                         args=(child_end, file.descriptor, preparer, limits))
        self._child_end = child_end
        self._started = False
        self._located: list[str] = []
        self._ready: deque[np.ndarray] = deque()
        self.info: VideoInfo | None = None

    @classmethod
    async def open(cls, file: OpenedFile, preparer: ImagePreparer, settings: Settings) -> DecodingProcess:
        """Start the child on ``file`` and wait for the video's :class:`VideoInfo`."""
        self = cls(file, preparer, settings)
        try:
            await run_blocking(self._start)
            _, frame_count, fps, width, height = await self._receive()
        except BaseException:
            await self.close()
            raise
        self.info = VideoInfo(frame_count, fps, width, height)
        return self

    def _start(self) -> None:
        self._process.start()
        self._started = True
        self._child_end.close()  # the child's copy stays: its end of the pipe reports its exit

    def decode(self, jobs: Sequence[decode_worker.Job], chunk: int,
               located_as: Sequence[str] = ()) -> None:
        """Ask for ``jobs`` (frames in output order); ``located_as`` names each job in errors."""
        self._located = list(located_as)
        try:
            self._connection.send((list(jobs), chunk))  # small: frame numbers and boxes
        except OSError:  # the child is gone: the next receive says how it ended
            pass

    async def take(self, count: int) -> np.ndarray:
        """The next ``count`` prepared frames, in job order."""
        while sum(len(block) for block in self._ready) < count:
            _, pixels = await self._receive()
            self._ready.append(pixels)
        taken, needed = [], count
        while needed:
            block = self._ready.popleft()
            if len(block) > needed:
                self._ready.appendleft(block[needed:])
                block = block[:needed]
            taken.append(block)
            needed -= len(block)
        return np.concatenate(taken)

    async def _receive(self) -> tuple:
        """The child's next message, within what is left of the time limit."""
        receiving = asyncio.ensure_future(asyncio.to_thread(self._connection.recv))
        started = time.monotonic()
        try:
            done, _ = await asyncio.wait([receiving], timeout=max(self._time_left, 0))
        except asyncio.CancelledError:
            await self._kill(receiving)
            raise
        self._time_left -= time.monotonic() - started
        if not done:
            await self._kill(receiving)
            raise ApiError(504, f"Video decoding did not finish within {self._timeout:g} s")
        try:
            message = receiving.result()
        except (EOFError, OSError):
            await run_blocking(self._process.join)
            raise self._died() from None
        if message[0] == "error":
            _, status, detail, job = message
            error = ApiError(status, detail)
            if job is not None and job < len(self._located):
                raise located(self._located[job], error)
            raise error
        return message

    def _died(self) -> ApiError:
        code = self._process.exitcode
        if code is not None and code < 0:
            return InvalidInput(f"the video decoder crashed ({signal.Signals(-code).name})")
        return InvalidInput(f"the video decoder stopped unexpectedly (exit code {code})")

    async def _kill(self, receiving: asyncio.Future) -> None:
        """End the child now; its closed pipe ends the pending receive."""
        self._process.kill()
        await settle(receiving, cancel=False)

    async def close(self) -> None:
        """Stop the child if it still runs and reap it; frees the pipe."""
        if self._started:
            if self._process.is_alive():
                self._process.kill()
            await run_blocking(self._process.join)
            self._process.close()
        self._child_end.close()
        self._connection.close()

    async def __aenter__(self) -> DecodingProcess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
