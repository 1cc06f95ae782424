"""A run's log: every line into ``RUN/train.log``, and the terminal's share of them to the caller's ``log``.

Lines are of two kinds. A decision (``log(message)``) is one short line that the terminal shows: the
kernels chosen, the strategy, an epoch's scores. Its measurements (``detail(log, message)``: every
candidate's speed, the statistics behind a choice) go to ``train.log`` always, and to a caller's
``log`` only where it asks for them with a ``detail`` method of its own (the command line's ``-v``).
A plain callable given to a function that runs outside a run folder gets both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["LOG_FILE", "RunLog", "detail"]

LOG_FILE = "train.log"


def detail(log: Callable[[str], None], message: str) -> None:
    """Log the measurements behind a decision: to ``log.detail`` where ``log`` has one, else to ``log``."""
    getattr(log, "detail", log)(message)


class RunLog:
    """``log`` of a run: each line appended to ``folder/train.log`` with its time, then passed on.

    A resumed run appends to the same file. Lines are written as they come (line-buffered), so that an
    interrupted run's file holds everything up to its last line.
    """

    def __init__(self, folder: str | Path, log: Callable[[str], None]):
        self.path = Path(folder) / LOG_FILE
        self._log = log
        self._file = None

    def __call__(self, message: str) -> None:
        self._write(message)
        self._log(message)

    def detail(self, message: str) -> None:
        self._write(message)
        if hasattr(self._log, "detail"):
            self._log.detail(message)

    def _write(self, message: str) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed by close())
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in str(message).splitlines() or [""]:
            self._file.write(f"{stamp} {line}\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
