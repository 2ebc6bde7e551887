"""Private temporary files for videos that arrive as bytes (downloads, base64 payloads).

decord reads from a path, so such videos go to disk: each in its own directory made by
``mkdtemp`` (mode 0700), as a file of mode 0600, and the directory is removed when the
``with`` block ends, whether it ends in success, an error or a cancelled request.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

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
