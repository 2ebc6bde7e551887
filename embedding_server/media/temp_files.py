"""Private temporary files for videos that arrive as bytes (downloads, base64 payloads).

decord reads from a path, so such videos go to disk: each in its own directory made by
``mkdtemp`` (mode 0700), as a file of mode 0600, and the directory is removed when the
``with`` block ends, whether it ends in success, an error or a cancelled request. Downloads
hand their chunks to a :class:`BackgroundWriter`, so the event loop never waits for the disk.
"""

from __future__ import annotations

import os
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from embedding_server.media.blocking import run_blocking
from embedding_server.media.local_files import OpenedFile

PREFIX = "embedding-video-"


@contextmanager
def private_directory(parent: Path | None) -> Iterator[Path]:
    """A fresh private directory under ``parent`` (the system's temp dir when ``None``)."""
    if parent is not None:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=PREFIX, dir=parent, ignore_cleanup_errors=True) as name:
        yield Path(name)


def open_private(path: Path) -> BinaryIO:
    """A new file only the server's user can read (never an existing one), open for writing."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(descriptor, "wb")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new private file (see :func:`open_private`)."""
    with open_private(path) as file:
        file.write(data)


def open_written(path: Path) -> OpenedFile:
    """The private file at ``path``, opened for reading (the decoding process inherits it)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):  # the directory is private: never happens
        os.close(descriptor)
        raise RuntimeError(f"{path} is not the file just written")
    return OpenedFile(descriptor, path, status.st_size, "the video")


class BackgroundWriter:
    """A new private file written by one thread of its own, in the order chunks are handed over.

    :meth:`write` only queues the chunk, so it may be called on the event loop. The queue holds
    at most what the download's byte cap lets through; the first write error is raised when the
    writer closes.
    """

    def __init__(self, path: Path) -> None:
        self._file = open_private(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-writer")
        self._error: OSError | None = None

    def write(self, chunk: bytes) -> None:
        self._thread.submit(self._write, chunk)

    def _write(self, chunk: bytes) -> None:
        if self._error is None:
            try:
                self._file.write(chunk)
            except OSError as error:
                self._error = error

    def _close(self) -> None:
        self._thread.shutdown(wait=True)
        self._file.close()
        if self._error is not None:
            raise self._error

    async def __aenter__(self) -> BackgroundWriter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await run_blocking(self._close)
