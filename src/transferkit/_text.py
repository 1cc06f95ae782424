"""Text shown to people from names that came from the file system."""

from __future__ import annotations

import os

__all__ = ["human_bytes", "one_line", "printable", "wrap_entries"]


def printable(text: str | os.PathLike) -> str:
    """``text`` with bytes that are not UTF-8 (kept by Python as surrogates) written as ``\\xNN``.

    Examples:
        >>> printable(os.fsdecode(b"r\\xfcn"))
        'r\\\\xfcn'
    """
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` (an exception, say) on one line, its whitespace collapsed, cut at ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if limit is None else line[:limit]


def first_line(error: object, limit: int | None = 300) -> str:
    """An error's first line (its type's name when its message is empty), cut at ``limit`` characters: what a
    message quotes of a library's exception.

    Example:
        >>> first_line(ValueError("bad shape\n  at line 3"))
        'bad shape'
        >>> first_line(KeyError())
        'KeyError'
    """
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if limit is None else line[:limit]


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``: bytes in the largest binary unit that leaves at least 1."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def wrap_entries(text: str, width: int, indent: str = "  ") -> str:
    """``text`` in lines of at most ``width``, broken after ``, `` or ``; `` (between the entries of a list),
    and inside an entry only where one is longer than a line; lines after the first are indented.

    Examples:
        >>> print(wrap_entries("train images per class: cat 4, dog 5, bird 12", 30))
        train images per class: cat 4,
          dog 5, bird 12
    """
    import re
    import textwrap

    if len(text) <= width:
        return text
    pieces = re.split(r"(?<=[,;]) ", text)
    lines, line = [], ""
    for piece in pieces:
        room = width - (len(indent) if lines else 0)
        joined = f"{line} {piece}" if line else piece
        if len(joined) <= room or not line:
            line = joined
        else:
            lines.append(line)
            line = piece
        while len(line) > width - (len(indent) if lines else 0):  # an entry longer than a line: at its spaces
            room = width - (len(indent) if lines else 0)
            head = textwrap.wrap(line, room, break_long_words=False, break_on_hyphens=False)[0]
            lines.append(head)
            line = line[len(head) :].lstrip()
            if not line:
                break
    if line:
        lines.append(line)
    return "\n".join(lines[:1] + [indent + rest for rest in lines[1:]])
