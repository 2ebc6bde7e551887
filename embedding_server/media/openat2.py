"""``openat2(2)`` with ``RESOLVE_BENEATH``, through ctypes (Python has no binding).

Linux 5.6 and later resolve a path relative to a directory descriptor and refuse, inside the
kernel and atomically with the open, any step that would leave that directory or follow a
symlink. Where the system call is missing (older kernels, other systems) or filtered (some
container seccomp profiles answer EPERM), :func:`open_beneath` raises :class:`Unsupported` and
callers fall back to checking the opened descriptor instead.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import sys

SYS_OPENAT2 = 437  # the same number on every Linux architecture (asm-generic numbering)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class Unsupported(Exception):
    """The running system offers no usable ``openat2``."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _syscall() -> ctypes._CFuncPtr | None:
    if not sys.platform.startswith("linux"):
        return None
    function = ctypes.CDLL(None, use_errno=True).syscall
    function.restype = ctypes.c_long
    return function


def open_beneath(directory_fd: int, relative: str, flags: int) -> int:
    """Open ``relative`` under ``directory_fd`` through real directories only.

    No component may be a symlink or ``..`` leaving the directory, so what is opened lies
    beneath it whatever happens to the names meanwhile. Raises ``OSError`` as ``open`` does
    (``ELOOP`` for a symlink, ``EXDEV`` for an escape) and :class:`Unsupported` where the call
    is not available.
    """
    syscall = _syscall()
    if syscall is None:
        raise Unsupported("openat2 needs Linux")
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    descriptor = syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(directory_fd),
                         ctypes.c_char_p(os.fsencode(relative)), ctypes.byref(how),
                         ctypes.c_size_t(ctypes.sizeof(how)))
    if descriptor >= 0:
        return descriptor
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EPERM):
        raise Unsupported(os.strerror(code))
    raise OSError(code, os.strerror(code), relative)
