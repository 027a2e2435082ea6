"""``openat2(2)`` through ``ctypes``: open a path *beneath* a directory file descriptor.

The kernel resolves the whole path itself, in one call, refusing (``EXDEV``) any ``..``, absolute
path or symlink that would leave the directory, and (``ELOOP``) the ``/proc`` magic links. Nothing
can be swapped between a check and the open, because the open *is* the check. Syscall 437 has the
same number on every Linux architecture (it is newer than the unified table); Linux 5.6 or later.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import cast

__all__ = [
    "RESOLVE_BENEATH",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "SAFE",
    "available",
    "fd_path",
    "openat2",
]

SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
SAFE = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
"""What every open of the fs server uses."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


@cache
def _syscall() -> Callable[..., int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.syscall
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_OpenHow), ctypes.c_size_t]
    return cast(Callable[..., int], fn)


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0, resolve: int = SAFE) -> int:
    """A new file descriptor for ``path`` resolved beneath ``dir_fd``; raises ``OSError``.

    ``O_CLOEXEC`` is always added. ``EXDEV`` means the path leads out of ``dir_fd``.
    """
    if "\0" in path:
        raise OSError(errno.EINVAL, "a path may not contain a NUL byte", path)
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    encoded = os.fsencode(path or ".")
    while True:
        fd = int(_syscall()(SYS_OPENAT2, dir_fd, encoded, ctypes.byref(how), ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code), path)


def fd_path(fd: int) -> Path:
    """Where an open file descriptor is now, as the kernel names it (``/proc/self/fd``)."""
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


@cache
def available() -> bool:
    """Whether this kernel has ``openat2`` with ``RESOLVE_BENEATH`` (and refuses ``..`` with it)."""
    try:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.close(openat2(root, "etc", os.O_PATH))
        try:
            os.close(openat2(root, "../etc", os.O_PATH))
        except OSError as error:
            return error.errno == errno.EXDEV
        return False
    except (OSError, AttributeError):
        return False
    finally:
        os.close(root)
