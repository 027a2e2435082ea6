"""What a command wrote, made safe to show a model: terminal escape sequences and control
characters stripped, carriage-return redraws flattened, binary data summarised, not dumped. The
fs server tells a binary file from a text file by the same rule (:func:`is_binary`)."""

from __future__ import annotations

import hashlib
import re

__all__ = ["is_binary", "summarise_binary", "terminal_safe"]

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement, screen clearing
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks, clipboard writes
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[@-Z\\-_]|\x1b."  # two-byte sequences, and a lone ESC with whatever follows
    r"|[\x9b\x9d\x90][^\x07\x9c]*[\x07\x9c@-~]?"  # 8-bit CSI / OSC / DCS
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` without escape sequences or control characters except tab and newline; a
    carriage return (a progress bar redrawing its line) becomes a newline."""
    text = _ESCAPES.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text)


_PLAIN = bytes(range(0x20, 0x7F)) + b"\t\n\r\x1b"


def is_binary(data: bytes) -> bool:
    """Whether ``data`` looks like binary rather than text: a NUL byte, or mostly bytes that are
    not text (invalid UTF-8, control characters; colours and other escapes count as text).

    The one rule for both servers: the shell judges the output it kept, the fs server the first
    bytes of a file (:data:`~dispatch.servers.fs.io.SNIFF_BYTES`) before reading or grepping it."""
    if b"\0" in data:
        return True
    if not data.translate(None, _PLAIN):  # plain ASCII, the common case: decided without decoding
        return False
    text = _ESCAPES.sub("", data.decode("utf-8", errors="replace"))
    odd = text.count("\ufffd") + len(_CONTROLS.findall(text.replace("\r", "")))
    return odd > max(8, len(text) // 10)


def summarise_binary(data: bytes, total: int) -> str:
    """One line in place of binary output: its size, a digest of what was kept, and its start."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return (
        f"[binary output: {total:,} bytes, not shown (sha256 of the kept {len(data):,} bytes: {digest}…;"
        f" starts {data[:16].hex(' ')}); redirect it to a file and inspect it with a tool such as xxd]"
    )
