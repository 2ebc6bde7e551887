"""The media files of a folder, found by their suffix, with their size and modification time,
and their content hashes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE, VIDEO = "image", "video"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class MediaFile:
    path: Path
    kind: str  # IMAGE or VIDEO
    size: int
    mtime_ns: int


def media_kind(name: str) -> str | None:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return IMAGE
    if suffix in VIDEO_SUFFIXES:
        return VIDEO
    return None


def _hidden(name: str) -> bool:
    return name.startswith(".")


def media_files(root: Path, skip: Path) -> list[MediaFile]:
    """The images and videos under ``root`` in a stable order, leaving out the directory
    ``skip`` (the index itself) and hidden directories and files (``.git``, macOS's ``._``
    resource forks, which carry an image suffix but no image)."""
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories
                                   if not _hidden(name) and Path(directory, name) != skip)
        for name in sorted(names):
            kind = media_kind(name)
            if kind is None or _hidden(name):
                continue
            path = Path(directory, name)
            try:
                status = path.stat()
            except OSError:  # a dangling link
                continue
            found.append(MediaFile(path, kind, status.st_size, status.st_mtime_ns))
    return found


def content_hash(path: Path) -> str:
    """SHA-256 of the file, read in chunks (videos can be far larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
