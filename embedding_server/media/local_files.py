"""Files that a request names on the server's own disk (``video_file``, ``frames_batch``).

A relative path resolves under an anchor (the video root, or a manifest's own directory for
the paths inside it). Whatever was written, the path must lie inside the video root or one of
``EMBEDDING_VIDEO_ALLOWED_ROOTS`` once every symlink is resolved; a ``..`` component is refused
outright. The check only reads directory entries and links (``realpath``, ``stat``): nothing
outside the roots is opened, and callers open the resolved path, not the one they were given.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedding_server.errors import ApiError, InvalidInput
from embedding_server.settings import Settings


def file_not_found(shown: str) -> ApiError:
    return ApiError(404, f"File not found: {shown}")


def access_denied(shown: str) -> ApiError:
    return ApiError(403, f"Access denied: {shown} is outside the allowed video directories")


def unreadable(shown: str, error: OSError) -> ApiError:
    """422 for a path the system refuses to resolve or read (too long, no permission, ...)."""
    return InvalidInput(f"{shown} cannot be read ({error.strerror or type(error).__name__})")


def allowed_roots(settings: Settings) -> tuple[Path, ...]:
    """The video root and the extra roots, symlinks resolved (``/tmp`` may itself be a link)."""
    roots = (settings.video_root, *settings.video_allowed_roots)
    return tuple(dict.fromkeys(Path(os.path.realpath(root)) for root in roots))


def resolve_local_file(raw: str, settings: Settings, anchor: Path | None = None) -> Path:
    """The real path of the regular file ``raw`` names, after the confinement checks.

    ``anchor`` (default: the video root) is where a relative ``raw`` starts. Raises 403 for a
    path outside the allowed roots or with a ``..`` component, 404 ``File not found: <raw>``
    for a missing file, 422 for a NUL character, something that is not a regular file or a
    path the system refuses (too long, unreadable directory).
    """
    if "\x00" in raw:
        raise InvalidInput("file path contains a NUL character")
    path = Path(raw)
    if ".." in path.parts:
        raise access_denied(raw)
    try:
        real = Path(os.path.realpath((anchor or settings.video_root) / path))
        if not any(real.is_relative_to(root) for root in allowed_roots(settings)):
            raise access_denied(raw)
        if not real.exists():
            raise file_not_found(raw)
        if not real.is_file():
            raise InvalidInput(f"{raw} is not a regular file")
    except OSError as error:
        raise unreadable(raw, error) from None
    return real
