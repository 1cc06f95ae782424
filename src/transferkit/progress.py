"""Progress through long passes (an epoch, a cache, a learning-rate range test, a probe, an evaluation).

On an interactive terminal a bar (rich's, on stderr, gone when the pass ends); in a Jupyter notebook
tqdm's (a widget where ipywidgets is installed, else a line redrawn in place); anywhere else (a
file, a pipe, a scheduler's log) one plain line through ``log`` every :data:`PERIOD` seconds, so
that a pass of minutes is never silent and a short one adds nothing.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["PERIOD", "in_notebook", "progress"]

PERIOD = 30.0  # seconds between plain progress lines
T = TypeVar("T")


def progress(
    items: Iterable[T],
    label: str,
    log: Callable[[str], None] | None,
    *,
    total: int | None = None,
    unit: str = "batches",
    size: Callable[[T], int] | None = None,
) -> Iterator[T]:
    """Yield ``items``, showing how far the pass is: a bar on a terminal, else a line to ``log`` each PERIOD s.

    ``total`` defaults to ``len(items)`` where it has one. ``log=None`` shows nothing off a terminal.
    ``size``: how many units an item counts for (a batch's images), when not one; the speed is then shown too.

    Examples:
        >>> lines = []
        >>> list(progress(range(3), "epoch 1/2", lines.append))
        [0, 1, 2]
        >>> lines  # three quick steps: no line
        []
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if sys.stderr.isatty():
        yield from _bar(items, label, total, unit, size)
        return
    if in_notebook():
        from tqdm.auto import tqdm

        with tqdm(desc=label, total=total, unit=f" {unit}", leave=False) as bar:
            for item in items:
                yield item
                bar.update(size(item) if size else 1)
        return
    if log is None:
        yield from items
        return
    started = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += size(item) if size else 1
        now = time.perf_counter()
        if now - last >= PERIOD:
            last = now
            line = progress_line(label, done, total, now - started, unit)
            log(line + (f", {done / (now - started):.0f} {unit}/s" if size else ""))


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell), where stderr is no terminal and a bar still shows."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _bar(items: Iterable[T], label: str, total: int | None, unit: str, size) -> Iterator[T]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit)]
    columns += [TimeElapsedColumn(), TextColumn("elapsed")]
    columns += [TextColumn("about"), TimeRemainingColumn(), TextColumn("left")] if total else []
    columns += [TextColumn("{task.fields[rate]}")] if size else []
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(label, total=total, rate="")
        for item in items:
            yield item
            bar.advance(task, size(item) if size else 1)
            speed = bar.tasks[0].speed
            if size and speed:
                bar.update(task, rate=f"{speed:.0f} {unit}/s")


def progress_line(label: str, done: int, total: int | None, seconds: float, unit: str = "batches") -> str:
    """``epoch 2/10: 120 of 400 batches (30%), 31 s, about 72 s left``.

    Examples:
        >>> progress_line("epoch 2/10", 120, 400, 31.0)
        'epoch 2/10: 120 of 400 batches (30%), 31 s, about 72 s left'
        >>> progress_line("lr-find", 40, None, 12.4, "steps")
        'lr-find: 40 steps, 12 s'
    """
    if not total:
        return f"{label}: {done} {unit}, {seconds:.0f} s"
    left = seconds * (total - done) / max(done, 1)
    return (
        f"{label}: {done} of {total} {unit} ({math.floor(100 * done / total)}%), {seconds:.0f} s, "
        f"about {left:.0f} s left"
    )
