"""The decoding process's side: probe, decode and prepare the frames of one video, then exit.

It runs in a child process of the entry worker (:mod:`.decode_process`), so FFmpeg's work can
be ended at a deadline and a crash in it fails one request only. Messages on ``connection``:

* child → parent ``("info", frame_count, fps, width, height)`` once the video is open and its
  declared frame size passed ``limits`` (nothing was decoded yet);
* parent → child ``(jobs, chunk)``: ``(frame_index, crop_box or None)`` per output frame, in
  output order; or ``None`` to stop;
* child → parent ``("pixels", uint8 (n, H, W, 3))`` per ``chunk`` jobs, prepared by
  ``preparer``; or ``("error", status, detail, job)`` (``job``: the failing job's position, or
  ``None`` before the jobs) after which the child exits.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection

import numpy as np
from PIL import Image

from embedding_server.http_api.errors import ApiError
from embedding_server.media.video import FrameLimits, VideoFile
from runners.contract import ImagePreparer

Box = tuple[int, int, int, int]
Job = tuple[int, Box | None]


def serve(connection: Connection, descriptor: int, preparer: ImagePreparer, limits: FrameLimits) -> None:
    """The child's whole life; ``descriptor`` is the opened video, inherited across the fork."""
    _close_inherited(keep=(connection.fileno(), descriptor))
    position = None
    try:
        video = VideoFile(f"/proc/self/fd/{descriptor}", limits)
        connection.send(("info", video.frame_count, video.fps, video.width, video.height))
        request = connection.recv()
        if request is None:
            return
        jobs, chunk = request
        for start in range(0, len(jobs), chunk):
            pixels = []
            for position in range(start, min(start + chunk, len(jobs))):
                index, box = jobs[position]
                image = Image.fromarray(video.frame(index))
                pixels.append(preparer(image if box is None else image.crop(box)))
            connection.send(("pixels", np.stack(pixels)))
    except ApiError as error:
        connection.send(("error", error.status_code, error.detail, position))
    finally:
        connection.close()


def _close_inherited(keep: tuple[int, ...]) -> None:
    """Close what the fork copied from the entry worker (its sockets, other requests' pipes and
    files), so that no other child holds them open and the child sees nothing but its video."""
    low = 3
    for descriptor in sorted(keep):
        os.closerange(low, descriptor)
        low = descriptor + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
