"""Files that a request names on the server's own disk (``video_file``, ``frames_batch``).

A relative path resolves under an anchor (the video root, or a manifest's own directory for
the paths inside it). Whatever was written, the path must lie inside the video root or one of
``EMBEDDING_VIDEO_ALLOWED_ROOTS`` once every symlink is resolved; a ``..`` component is refused
outright, and a path outside is refused before anything is opened.

What is checked is what is opened: :func:`open_local_file` opens the resolved path once and
confines the opened object, not the name, so a symlink or directory swapped in meanwhile
cannot lead it outside. Where the kernel has ``openat2`` the open itself walks real
directories beneath the root only; elsewhere it opens with ``O_NOFOLLOW`` and checks the
descriptor's own path in ``/proc/self/fd``. Opens never block (``O_NONBLOCK``, so a FIFO cannot
hold a worker), and only regular files are kept; readers then use the descriptor
(:attr:`OpenedFile.proc_path` reopens the very same inode for FFmpeg).

A root counts only while it is a real directory (not itself a symlink) that other users
cannot write: :func:`check_video_roots` refuses one at start-up, and a root that turns into
one later (a missing ``/tmp`` root created by someone else) is ignored at request time.
"""

from __future__ import annotations

import errno
import os
import stat
import weakref
from pathlib import Path

from embedding_server.http_api.errors import ApiError, InvalidInput, payload_too_large
from embedding_server.media import openat2
from embedding_server.settings import Settings, SettingsError

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_ROOT_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What realpath meets when a name it just found to be a link is replaced before it reads it.
_RENAMED_MEANWHILE = frozenset({errno.ENOENT, errno.EINVAL, errno.ENOTDIR})


def file_not_found(shown: str) -> ApiError:
    return ApiError(404, f"File not found: {shown}")


def access_denied(shown: str) -> ApiError:
    return ApiError(403, f"Access denied: {shown} is outside the allowed video directories")


def unreadable(shown: str, error: OSError) -> ApiError:
    """422 for a path the system refuses to resolve or read (too long, no permission, ...)."""
    return InvalidInput(f"{shown} cannot be read ({error.strerror or type(error).__name__})")


def _root_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a root, or ``None`` (also for a missing path)."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(status.st_mode):
        return "is a symlink; name the real directory"
    if not stat.S_ISDIR(status.st_mode):
        return "is not a directory"
    if status.st_mode & stat.S_IWOTH:
        return "is writable by other users"
    return None


def check_video_roots(settings: Settings) -> None:
    """Start-up check of the configured roots; :class:`SettingsError` names the variable.

    A missing root is accepted (the server may never be asked for local files); it is
    checked again whenever a request uses it.
    """
    named = [("EMBEDDING_VIDEO_ROOT", settings.video_root)]
    named += [("EMBEDDING_VIDEO_ALLOWED_ROOTS", root) for root in settings.video_allowed_roots]
    for variable, root in named:
        problem = _root_problem(root)
        if problem is not None:
            raise SettingsError(f"Invalid configuration: {variable}: {root} {problem}")


class _Roots:
    """Descriptors of the usable roots, open for the duration of one file lookup."""

    def __init__(self, settings: Settings) -> None:
        self.entries: list[tuple[Path, int]] = []
        for root in dict.fromkeys((settings.video_root, *settings.video_allowed_roots)):
            try:
                descriptor = os.open(root, _ROOT_FLAGS)  # ELOOP: the root itself is a link
            except OSError:
                continue
            if os.fstat(descriptor).st_mode & stat.S_IWOTH:
                os.close(descriptor)
                continue
            self.entries.append((Path(_descriptor_path(descriptor)), descriptor))

    def holding(self, real: Path) -> tuple[Path, int] | None:
        return next(((root, fd) for root, fd in self.entries if real.is_relative_to(root)), None)

    def close(self) -> None:
        for _, descriptor in self.entries:
            os.close(descriptor)


def _descriptor_path(descriptor: int) -> str:
    return os.readlink(f"/proc/self/fd/{descriptor}")


class OpenedFile:
    """A confined regular file, open read-only; close it (or use ``with``) when done.

    The descriptor is also closed when the object is collected, so one opened in a worker
    thread for a request cancelled meanwhile does not stay open.
    """

    def __init__(self, descriptor: int, path: Path, size: int, shown: str) -> None:
        self.descriptor = descriptor
        self.path = path  # its real path when it was opened: for relative names inside it
        self.size = size
        self.shown = shown
        self._closer = weakref.finalize(self, os.close, descriptor)

    @property
    def proc_path(self) -> str:
        """A path that reopens this very inode (for libraries that take names only)."""
        return f"/proc/self/fd/{self.descriptor}"

    def read_capped(self, max_bytes: int, what: str) -> bytes:
        """The whole file; 413 over ``max_bytes`` (checked on the descriptor, then while reading)."""
        if self.size > max_bytes:
            raise payload_too_large(what, max_bytes)
        try:
            data = os.pread(self.descriptor, max_bytes + 1, 0)
        except OSError as error:
            raise unreadable(self.shown, error) from None
        if len(data) > max_bytes:
            raise payload_too_large(what, max_bytes)
        return data

    def close(self) -> None:
        self._closer()  # closes once, however often it is called
        self.descriptor = -1

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_local_file(raw: str, settings: Settings, anchor: Path | None = None) -> OpenedFile:
    """Open the regular file ``raw`` names, confined to the allowed roots.

    ``anchor`` (default: the video root) is where a relative ``raw`` starts. Raises 403 for a
    path outside the allowed roots, with a ``..`` component or changed into a link while it was
    opened; 404 ``File not found: <raw>`` for a missing file; 422 for a NUL character,
    something that is not a regular file (a directory, a FIFO, a device) or a path the system
    refuses (too long, no permission). Blocks briefly: run it in a worker thread.
    """
    if "\x00" in raw:
        raise InvalidInput("file path contains a NUL character")
    path = Path(raw)
    if ".." in path.parts:
        raise access_denied(raw)
    roots = _Roots(settings)
    try:
        try:
            real = Path(os.path.realpath((anchor or settings.video_root) / path))
        except OSError as error:
            if error.errno not in _RENAMED_MEANWHILE:
                raise
            raise access_denied(raw) from None  # a link changed while it was read: target unknown
        held = roots.holding(real)
        if held is None:
            raise access_denied(raw)
        descriptor = _open_confined(real, *held, roots, raw)
    except OSError as error:
        raise unreadable(raw, error) from None
    finally:
        roots.close()
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise InvalidInput(f"{raw} is not a regular file")
    except BaseException:
        os.close(descriptor)
        raise
    return OpenedFile(descriptor, real, status.st_size, raw)


def _open_confined(real: Path, root: Path, root_fd: int, roots: _Roots, raw: str) -> int:
    """A descriptor of ``real`` that provably lies inside a root (see the module docstring)."""
    try:
        try:
            return openat2.open_beneath(root_fd, str(real.relative_to(root)) or ".", _OPEN_FLAGS)
        except openat2.Unsupported:
            descriptor = os.open(real, _OPEN_FLAGS | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise file_not_found(raw) from None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EXDEV):  # a link appeared since realpath
            raise access_denied(raw) from None
        raise
    if roots.holding(Path(_descriptor_path(descriptor))) is None:
        os.close(descriptor)
        raise access_denied(raw)
    return descriptor
