"""Text shown to people from names that came from the file system."""

from __future__ import annotations

import os

__all__ = ["human_bytes", "one_line", "printable"]


def printable(text: str | os.PathLike) -> str:
    """``text`` with bytes that are not UTF-8 (kept by Python as surrogates) written as ``\\xNN``.

    Example:
        >>> printable(os.fsdecode(b"r\\xfcn"))
        'r\\\\xfcn'
    """
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` (an exception, say) on one line, its whitespace collapsed, cut at ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if limit is None else line[:limit]


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``: bytes in the largest binary unit that leaves at least 1."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
