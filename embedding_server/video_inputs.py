"""The five video inputs: from a request to one vector per frame, in order.

Frames stream to the Encoder in chunks of ``image_max_batch_size``: while the Encoder embeds
one chunk, the next is decoded and preprocessed in a worker thread, so at most two chunks of
model-sized pixels are alive at once, however long the video. Videos that arrive as bytes are
written to a private temporary file that is removed when the request ends, however it ends.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Awaitable, Callable, Sequence, TypeVar

import numpy as np
from PIL import Image

from embedding_server.errors import ApiError, located
from embedding_server.media.frame_selection import (
    check_frame_count,
    check_segment_config,
    select_frames,
)
from embedding_server.media.images import decode_base64
from embedding_server.media.local_files import resolve_local_file
from embedding_server.media.manifest import (
    check_frame_numbers,
    frame_sources,
    manifest_image,
    read_manifest,
)
from embedding_server.media.remote import download
from embedding_server.media.temp_files import open_private, private_directory, write_private
from embedding_server.media.video import VideoFile
from embedding_server.schemas import (
    FramesBatchInput,
    ImageBase64Input,
    ImageUrlInput,
    SegmentConfig,
    VideoBase64Input,
    VideoFileInput,
    VideoFramesInput,
    VideoUrlInput,
)
from embedding_server.settings import Settings
from runners.base import ImagePreparer

T = TypeVar("T")
VideoInput = VideoFramesInput | VideoUrlInput | VideoBase64Input | VideoFileInput | FramesBatchInput
EncodeImages = Callable[[np.ndarray], Awaitable[np.ndarray]]
ImagePixels = Callable[[ImageUrlInput | ImageBase64Input], Awaitable[np.ndarray]]


async def run_blocking(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a worker thread.

    A cancelled caller still waits for the thread to finish before the cancellation goes on,
    so the clean-up that follows (closing a reader, deleting a temporary file) never races it.
    """
    future = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _settle(future, cancel=False)  # cancelling it would not stop the thread
        raise


async def _settle(task: asyncio.Future, *, cancel: bool) -> None:
    """Wait for ``task`` (cancelled first if ``cancel``); what it ends with is dropped."""
    if cancel:
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


class VideoEmbedder:
    """Answers video inputs with the Encoder's ``encode_images`` and the model's preparer."""

    def __init__(self, encode_images: EncodeImages, image_pixels: ImagePixels,
                 settings: Settings) -> None:
        self._encode_images = encode_images
        self._image_pixels = image_pixels  # the image inputs' own fetch-decode-prepare path
        self._settings = settings

    async def embed(self, item: VideoInput, preparer: ImagePreparer) -> np.ndarray:
        """``(frames, D)`` vectors for ``item``."""
        settings = self._settings
        if isinstance(item, VideoFramesInput):
            return await self._frames(item.video_frames)
        if isinstance(item, FramesBatchInput):
            return await self._manifest(item.frames_manifest_path, preparer)
        check_segment_config(item.segment_config, settings)
        if isinstance(item, VideoFileInput):
            path = await run_blocking(resolve_local_file, item.video_path, settings)
            return await self._video(path, item.segment_config, preparer)
        with private_directory(settings.video_temp_dir) as directory:
            path = directory / "video"
            if isinstance(item, VideoUrlInput):
                # Straight to disk: chunk writes go to the page cache, and holding up to
                # max_video_bytes per concurrent download in memory would not be safe.
                with open_private(path) as file:
                    await download(item.video_url, file.write, max_bytes=settings.max_video_bytes,
                                   settings=settings, what="video")
            else:
                data = await run_blocking(partial(decode_base64, max_bytes=settings.max_video_bytes,
                                                  what="video"), item.video_base64)
                await run_blocking(write_private, path, data)
                del data  # the file holds it now
            return await self._video(path, item.segment_config, preparer)

    async def _frames(self, frames: Sequence[ImageUrlInput | ImageBase64Input]) -> np.ndarray:
        check_frame_count(len(frames), self._settings)

        async def one(position: int) -> np.ndarray:
            try:
                return await self._image_pixels(frames[position])
            except ApiError as error:
                raise located(f"video_frames[{position}]", error) from None

        async def chunk(positions: Sequence[int]) -> np.ndarray:
            tasks = [asyncio.ensure_future(one(position)) for position in positions]
            try:
                return np.concatenate(await asyncio.gather(*tasks))
            finally:
                for task in tasks:  # after a failure, stop the siblings still fetching
                    task.cancel()

        return await self._encode_in_chunks(range(len(frames)), chunk)

    async def _video(self, path: Path, config: SegmentConfig, preparer: ImagePreparer) -> np.ndarray:
        video = await run_blocking(VideoFile, path)
        try:
            wanted = select_frames(config, video.frame_count, video.fps, self._settings)
            order = sorted(set(wanted))  # decode forward, each frame once

            def prepare(indices: Sequence[int]) -> np.ndarray:
                return np.stack([preparer(Image.fromarray(video.frame(index))) for index in indices])

            vectors = await self._encode_in_chunks(order, lambda part: run_blocking(prepare, part))
        finally:
            video.close()
        if order == wanted:
            return vectors
        row = {index: position for position, index in enumerate(order)}
        return vectors[[row[index] for index in wanted]]

    async def _manifest(self, raw_path: str, preparer: ImagePreparer) -> np.ndarray:
        settings = self._settings
        path = await run_blocking(resolve_local_file, raw_path, settings)
        manifest = await run_blocking(read_manifest, path, raw_path)
        check_frame_count(len(manifest.frames), settings)
        sources = await run_blocking(frame_sources, manifest, path.parent, settings)
        video = None
        if manifest.video_path is not None and any(isinstance(item, int) for item in sources):
            video_path = await run_blocking(resolve_local_file, manifest.video_path, settings,
                                            path.parent)
            video = await run_blocking(VideoFile, video_path)
        try:
            if video is not None:
                check_frame_numbers(sources, video.frame_count)

            def prepare(positions: Sequence[int]) -> np.ndarray:
                return np.stack([
                    preparer(manifest_image(manifest.frames[at], sources[at], video, at, settings))
                    for at in positions
                ])

            return await self._encode_in_chunks(range(len(sources)),
                                                lambda part: run_blocking(prepare, part))
        finally:
            if video is not None:
                video.close()

    async def _encode_in_chunks(
        self, items: Sequence[T], pixels_of: Callable[[Sequence[T]], Awaitable[np.ndarray]]
    ) -> np.ndarray:
        """Embed ``pixels_of`` each chunk of ``items``, preparing the next chunk meanwhile."""
        size = self._settings.image_max_batch_size
        chunks = [items[start:start + size] for start in range(0, len(items), size)]
        vectors = []
        upcoming = asyncio.ensure_future(pixels_of(chunks[0]))
        try:
            for number in range(len(chunks)):
                pixels = await upcoming
                if number + 1 < len(chunks):
                    upcoming = asyncio.ensure_future(pixels_of(chunks[number + 1]))
                vectors.append(await self._encode_images(pixels))
                del pixels
        finally:
            await _settle(upcoming, cancel=True)
        return np.concatenate(vectors)

