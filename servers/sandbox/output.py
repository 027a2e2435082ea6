"""What a command wrote, made safe to show a model: terminal escape sequences and control
characters stripped, carriage-return redraws flattened, binary data summarised, not dumped. The
fs server tells a binary file from a text file by the same rule (:func:`is_binary`)."""

from __future__ import annotations

import hashlib
import re

__all__ = ["is_binary", "strip_terminal_controls", "summarise_binary", "terminal_safe"]

_ST = r"(?:\x1b\\|\x07|\x9c)"
"""String terminator: ESC \\, BEL (xterm's OSC end) or the 8-bit ST."""
_CONTROL_SEQUENCES = re.compile(
    "|".join(
        (
            r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?",  # CSI: parameters, intermediates, final
            rf"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[\s\S]*?(?:{_ST}|\Z)",  # OSC, DCS, SOS, PM, APC strings
            r"\x1b[\x20-\x2f]*[\x30-\x7e]?",  # other escape sequences (charset, keypad, ...), or a lone ESC
        )
    )
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 controls but tab and newline, DEL, and C1 controls (left over once sequences are gone); and
the bidirectional controls (embeddings, overrides, isolates and marks), which make text read in
another order than it is written."""


def strip_terminal_controls(text: str, *, carriage_return: str = "") -> str:
    """``text`` without terminal escape sequences (CSI, OSC, DCS, SOS, PM, APC and other ESC
    sequences, in their 7-bit and 8-bit forms; an unterminated string swallows the rest rather
    than leak it), without C0/C1 control characters other than newline and tab, and without
    Unicode's bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069).
    ``\\r\\n`` becomes ``\\n``; a lone ``\\r`` becomes ``carriage_return`` (dropped by default)."""
    text = _CONTROL_SEQUENCES.sub("", text.replace("\r\n", "\n"))
    return _CONTROLS.sub("", text.replace("\r", carriage_return) if carriage_return else text)


def terminal_safe(text: str) -> str:
    """A command's output as :func:`strip_terminal_controls` leaves it, a carriage return (a
    progress bar redrawing its line) made a newline."""
    return strip_terminal_controls(text, carriage_return="\n")


_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, up to its end or the next ESC
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC
    r"|\x1b[@-Z\\-_]|\x1b."  # two-byte sequences, and a lone ESC with whatever follows
    r"|[\x9b\x9d\x90][^\x07\x9c]*[\x07\x9c@-~]?"  # 8-bit CSI / OSC / DCS
)
"""Escape sequences as :func:`is_binary` discounts them: each stops at the next ESC, so a stray
``ESC ]`` in binary data cannot hide the rest of it from the count."""
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
