"""Landlock through ``ctypes`` (syscalls 444-446): the sandbox's second layer, and its exec helper.

A Landlock ruleset, once applied, holds for the process and everything it starts, and a later
ruleset can only narrow it (rulesets stack), so a command cannot widen its own. Used two ways:

* :func:`abi` tells the probe which Landlock ABI the kernel offers (0: none);
* run as a script (``python -I -S -c <this file> --rw DIR ... -- bash -c CMD``), it drops every
  capability it holds (started by a root hub), restricts itself to reading beneath the ``--ro``
  paths and writing only in the ``--rw`` paths (and with ``--no-network``, ABI 4+, to no TCP bind
  or connect), then ``exec`` s the command. It imports nothing but the standard library, so it
  starts in milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Sequence

__all__ = ["NETWORK_ABI", "abi", "drop_capabilities", "main", "restrict"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 28, 47, 4
_SECUREBITS = 0b11101111
"""NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE, each locked, and KEEP_CAPS locked off: neither
``exec`` nor a uid change can give capabilities back."""
_CAPABILITY_VERSION_3 = 0x20080522
NETWORK_ABI = 4
"""The first ABI with network rules (TCP bind and connect)."""
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

READ = EXECUTE | READ_FILE | READ_DIR
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The only rights a rule on a file (not a directory) may carry."""
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _call(libc: ctypes.CDLL, *args: object) -> int:
    result = int(libc.syscall(*args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when Landlock is missing or disabled."""
    try:
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        return max(
            0,
            int(
                libc.syscall(
                    ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
                )
            ),
        )
    except (OSError, AttributeError):
        return 0


def restrict(write: Sequence[str], read: Sequence[str] = ("/",), network: bool = True) -> int:
    """Restrict this process: read (and execute) beneath ``read``, write beneath ``write``;
    scope signals and abstract unix sockets to the sandbox (ABI 6+); without ``network``, no TCP
    bind or connect at all (ABI 4+; earlier ABIs cannot refuse it). Returns the ABI used.
    Paths that do not exist are skipped. Raises OSError when Landlock is unavailable."""
    version = abi()
    if version < 1:
        raise OSError("Landlock is not available")
    handled = _FS_BY_ABI.get(version, (1 << 16) - 1)
    net = 0 if network or version < NETWORK_ABI else _NET_BIND_TCP | _NET_CONNECT_TCP
    attr = _RulesetAttr(handled, net, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if version >= 6 else 0)
    size = 24 if version >= 6 else 16 if version >= 4 else 8
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    ruleset = _call(libc, ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        for paths, rights in ((read, READ & handled), (write, handled)):
            for path in paths:
                _add_rule(libc, ruleset, path, rights)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        _call(libc, ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return version


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist grants nothing
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            rights &= FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        _call(
            libc,
            ctypes.c_long(_ADD_RULE),
            ctypes.c_int(ruleset),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
        )
    finally:
        os.close(fd)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _permitted() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    return 0


def drop_capabilities() -> None:
    """Give up every capability for good, when this process holds any (a root hub's child): the
    bounding and ambient sets emptied, the securebits locked so that ``exec`` as uid 0 gains none,
    then nothing effective, permitted or inheritable. The uid stays; its powers go."""
    if not _permitted():
        return
    libc = _libc()
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such cap
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")
    for option, value in ((_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL), (_PR_SET_SECUREBITS, _SECUREBITS)):
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl failed while dropping capabilities")
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    if _permitted():
        raise OSError("capabilities are still permitted after dropping them")


def main(argv: Sequence[str]) -> None:
    """``--rw PATH ... [--ro PATH ...] [--nproc N] [--no-network] -- COMMAND ...``: drop
    capabilities, restrict, then exec COMMAND."""
    args = list(argv)
    if "--" not in args:
        sys.exit("landlock helper: usage: --rw PATH ... [--ro PATH ...] [--nproc N] [--no-network] -- COMMAND ...")
    split = args.index("--")
    options, command = args[:split], args[split + 1 :]
    network = "--no-network" not in options
    options = [o for o in options if o != "--no-network"]
    write: list[str] = []
    read: list[str] = []
    for flag, value in zip(options[::2], options[1::2], strict=True):
        if flag == "--rw":
            write.append(value)
        elif flag == "--ro":
            read.append(value)
        elif flag == "--nproc":
            limit = int(value)
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    try:
        drop_capabilities()
        restrict(write, read or ["/"], network)
    except OSError as error:
        sys.exit(f"dispatch sandbox: the sandbox could not be applied ({error}); refusing to run unconfined")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
