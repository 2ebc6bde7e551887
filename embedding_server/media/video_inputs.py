"""The five video inputs: from a request to one vector per frame, in order, and where each
frame came from (its frame number and time, for ``POST /embeddings/frames``).

Frames stream to the Encoder in chunks of ``image_max_batch_size``: while the Encoder embeds
one chunk, the video's decoding process (:mod:`.decode_process`) decodes and prepares
the next, so at most two chunks of model-sized pixels are alive at once, however long the
video. Local files are opened once, confined, and decoded from that descriptor. Videos that arrive as bytes are
written to a private temporary file that is removed when the request ends, however it ends.
The time a decoded video's request waits for its decoding process is observed in
``embedding_decode_seconds``.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Awaitable, Callable, Sequence, TypeVar

import numpy as np

from embedding_server.http_api.errors import ApiError, located
from embedding_server.http_api.metrics import DECODE_SECONDS, Stopwatch
from embedding_server.http_api.schemas import (
    FramesBatchInput,
    ImageBase64Input,
    ImageUrlInput,
    SegmentConfig,
    VideoFileInput,
    VideoFramesInput,
    VideoInput,
    VideoUrlInput,
)
from embedding_server.media.blocking import all_or_error, run_blocking, settle
from embedding_server.media.decode_process import DecodingProcess
from embedding_server.media.frame_selection import (
    check_frame_count,
    check_pixel_budget,
    check_segment_config,
    select_frames,
)
from embedding_server.media.images import decode_base64
from embedding_server.media.local_files import OpenedFile, open_local_file
from embedding_server.media.manifest import (
    FramesManifest,
    check_crop,
    check_frame_numbers,
    frame_sources,
    manifest_image,
    read_manifest,
)
from embedding_server.media.remote import download
from embedding_server.media.temp_files import (
    BackgroundWriter,
    open_written,
    private_directory,
    write_private,
)
from embedding_server.settings import Settings
from runners.contract import ImagePreparer

T = TypeVar("T")
NameOf = Callable[[int], str]  # an item's position -> the client's name for it
# Pixels and the names of their rows -> vectors; a row the model fails on is an error naming it.
EncodeImages = Callable[[np.ndarray, NameOf], Awaitable[np.ndarray]]
ImagePixels = Callable[[ImageUrlInput | ImageBase64Input], Awaitable[np.ndarray]]


def a_video_frame(_: int) -> str:
    """The name of a frame of a video input the model fails on."""
    return "a video frame"


@dataclass(frozen=True)
class FrameVectors:
    """A video input's vectors, one row per embedded frame in output order, and per row the
    frame it came from: its number and its time in seconds (``None`` where no video tells it)."""

    vectors: np.ndarray  # (frames, D)
    frames: list[int]
    timestamps: list[float | None]
    fps: float | None  # the decoded video's average frame rate; None when no video was decoded whole


def frame_times(frames: Sequence[int], fps: float) -> list[float | None]:
    """When each of ``frames`` comes on screen, in seconds (see :mod:`.frame_selection`)."""
    return [index / fps for index in frames]


class VideoEmbedder:
    """Answers video inputs with the Encoder's ``encode_images`` and the model's preparer."""

    def __init__(self, encode_images: EncodeImages, image_pixels: ImagePixels,
                 settings: Settings) -> None:
        self._encode_images = encode_images
        self._image_pixels = image_pixels  # the image inputs' own fetch-decode-prepare path
        self._settings = settings

    async def embed(self, item: VideoInput, preparer: ImagePreparer) -> np.ndarray:
        """``(frames, D)`` vectors for ``item``."""
        return (await self.embed_frames(item, preparer)).vectors

    async def embed_frames(self, item: VideoInput, preparer: ImagePreparer) -> FrameVectors:
        """The vectors of ``item`` and the frame each came from; for ``video_frames``, a
        frame's number is its position in the list."""
        settings = self._settings
        if isinstance(item, VideoFramesInput):
            count = len(item.video_frames)
            check_frame_count(count, settings)
            vectors = await self.embed_images(item.video_frames, lambda position: f"video_frames[{position}]")
            return FrameVectors(vectors, list(range(count)), [None] * count, None)
        if isinstance(item, FramesBatchInput):
            return await self._manifest(item.frames_manifest_path, preparer)
        check_segment_config(item.segment_config, settings)
        if isinstance(item, VideoFileInput):
            with await run_blocking(open_local_file, item.video_path, settings) as file:
                return await self._video(file, item.segment_config, preparer)
        with private_directory(settings.video_temp_dir) as directory:
            path = directory / "video"
            if isinstance(item, VideoUrlInput):
                # Straight to disk: holding up to max_video_bytes per concurrent download in
                # memory would not be safe; a thread writes, so the loop never waits for it.
                async with BackgroundWriter(path) as file:
                    await download(item.video_url, file.write, max_bytes=settings.max_video_bytes,
                                   settings=settings, what="video")
            else:
                data = await run_blocking(partial(decode_base64, max_bytes=settings.max_video_bytes,
                                                  what="video"), item.video_base64)
                await run_blocking(write_private, path, data)
                del data  # the file holds it now
            with await run_blocking(open_written, path) as file:
                return await self._video(file, item.segment_config, preparer)

    async def embed_images(self, images: Sequence[ImageUrlInput | ImageBase64Input],
                           name_of: Callable[[int], str]) -> np.ndarray:
        """One vector per image, in order; an image's error names it (``name_of(position)``)."""
        async def one(position: int) -> np.ndarray:
            try:
                return await self._image_pixels(images[position])
            except ApiError as error:
                raise located(name_of(position), error) from None

        async def chunk(positions: Sequence[int]) -> np.ndarray:
            return np.concatenate(await all_or_error(*(one(position) for position in positions)))

        return await self._encode_in_chunks(range(len(images)), chunk, name_of)

    async def _video(self, file: OpenedFile, config: SegmentConfig,
                     preparer: ImagePreparer) -> FrameVectors:
        settings = self._settings
        decoding = Stopwatch()
        with decoding.running():
            video = await DecodingProcess.open(file, preparer, settings)
        async with video:
            info = video.info
            wanted = select_frames(config, info.frame_count, info.fps, settings)
            order = sorted(set(wanted))  # decode forward, each frame once
            check_pixel_budget(len(order), info.width, info.height, settings)
            video.decode([(index, None) for index in order], settings.image_max_batch_size)

            async def frames(part: Sequence[int]) -> np.ndarray:
                with decoding.running():
                    return await video.take(len(part))

            vectors = await self._encode_in_chunks(order, frames, a_video_frame)
        DECODE_SECONDS.labels(media="video").observe(decoding.seconds)
        if order != wanted:  # back to the order asked for, repeats kept
            row = {index: position for position, index in enumerate(order)}
            vectors = vectors[[row[index] for index in wanted]]
        return FrameVectors(vectors, wanted, frame_times(wanted, info.fps), info.fps)

    async def _manifest(self, raw_path: str, preparer: ImagePreparer) -> FrameVectors:
        """The entries' vectors in manifest order, with the frame numbers and timestamps the
        manifest gives them."""
        settings = self._settings
        with await run_blocking(open_local_file, raw_path, settings) as file:
            manifest = await run_blocking(read_manifest, file, settings)
            anchor = file.path.parent
        sources = await run_blocking(frame_sources, manifest, anchor, settings)
        from_video = [position for position, source in enumerate(sources) if isinstance(source, int)]
        async with AsyncExitStack() as stack:
            video = None
            if from_video:  # frame_sources made sure the manifest names a video
                video_file = stack.enter_context(await run_blocking(
                    open_local_file, manifest.video_path, settings, anchor))
                video = await stack.enter_async_context(
                    await DecodingProcess.open(video_file, preparer, settings))
                self._start_manifest_video(video, manifest, sources, from_video)

            async def pixels(positions: Sequence[int]) -> np.ndarray:
                def prepare_images() -> dict[int, np.ndarray]:
                    return {at: preparer(manifest_image(manifest.frames[at], at, anchor, settings))
                            for at in positions if not isinstance(sources[at], int)}

                images = await run_blocking(prepare_images)
                count = len(positions) - len(images)
                frames = iter(await video.take(count)) if video is not None and count else iter(())
                return np.stack([images[at] if at in images else next(frames) for at in positions])

            vectors = await self._encode_in_chunks(range(len(sources)), pixels, a_video_frame)
        return FrameVectors(vectors, [frame.frame_number for frame in manifest.frames],
                            [frame.timestamp for frame in manifest.frames], None)

    def _start_manifest_video(self, video: DecodingProcess, manifest: FramesManifest,
                              sources: list[str | int], from_video: list[int]) -> None:
        """Check the entries taken from the video against it, then ask for their frames."""
        info = video.info
        check_frame_numbers(sources, info.frame_count)
        for position in from_video:
            check_crop(manifest.frames[position], info.width, info.height, position)
        check_pixel_budget(len(from_video), info.width, info.height, self._settings)
        jobs = [(sources[at], manifest.frames[at].crop_bbox) for at in from_video]
        video.decode(jobs, self._settings.image_max_batch_size,
                     [f"frames[{position}]" for position in from_video])

    async def _encode_in_chunks(
        self, items: Sequence[T], pixels_of: Callable[[Sequence[T]], Awaitable[np.ndarray]], name_of: NameOf
    ) -> np.ndarray:
        """Embed ``pixels_of`` each chunk of ``items``, preparing the next chunk meanwhile;
        ``name_of(position)`` names an item the model fails on."""
        size = self._settings.image_max_batch_size
        chunks = [items[start:start + size] for start in range(0, len(items), size)]
        vectors = []
        upcoming = asyncio.ensure_future(pixels_of(chunks[0]))
        try:
            for number in range(len(chunks)):
                pixels = await upcoming
                if number + 1 < len(chunks):
                    upcoming = asyncio.ensure_future(pixels_of(chunks[number + 1]))
                offset = number * size
                vectors.append(await self._encode_images(pixels, lambda index: name_of(offset + index)))
                del pixels
        finally:
            await settle(upcoming, cancel=True)
        return np.concatenate(vectors)

