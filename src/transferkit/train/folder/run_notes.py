"""What a run says about itself beyond its epochs: where its weights came from, what a resume retired or left
stale, and how an interrupted run goes on."""

from __future__ import annotations

import shlex
from pathlib import Path

import torch
import torch.nn as nn

from ...model.factory import is_code_spec, is_object_spec
from ...model.surgery import find_head
from ...runtime.fastpath import FastPath, kernel_label
from ..config import TrainConfig
from .out_folder import EXPORT_FILES, REPORT_FILES
from .run_log import detail

__all__ = ["interrupted_line", "log_fast", "log_weights", "note_old_exports", "random_start", "retire_reports"]


def log_weights(config: TrainConfig, model: nn.Module, load_report: dict | None, note: str | None, log) -> None:
    """Where the weights came from (``note``: what auto found): what loaded, with the verification's warnings,
    or that none did."""
    if load_report is not None:
        how = ", ".join(f"{n} by {k}" for k, n in load_report["how"].items())
        source = f"{config.weights} ({note})" if config.weights and note else config.weights
        log(
            f"weights: {source or getattr(model, 'transferkit_weights', None)}: "
            f"{len(load_report['matched'])} tensors loaded, "
            f"{load_report['loaded_fraction']:.1%} of parameters ({how}); head '{find_head(model)}' is new"
        )
        for finding in load_report["verification"]["findings"]:
            log(f"warning: weights: {finding['message']}")
    elif is_object_spec(config.model):
        given = config.model.rpartition(".")[2]
        log(f"weights: the module's own: transferkit loads none into the {given} it was given")
    elif config.strategy != "scratch":
        log(random_start(config, note))


def random_start(config: TrainConfig, note: str | None) -> str:
    """The line of a run that loads no weights: a timm or torchvision MODEL starts from random values, a
    factory of the user's from what it made."""
    if is_code_spec(config.model):  # the user's factory may load weights of its own
        if note:  # auto
            return f"weights: {note}"
        return f"weights: none: transferkit loads none into {config.model}, which trains from what its factory made"
    consequence = {
        "full": "full trains it from scratch",
        "auto": "strategy auto judges random features",
    }.get(config.strategy, f"strategy {config.strategy} builds on random features")
    if note:  # auto found none, and the strategy is one that may go on
        return (
            f"warning: weights: {note}; {config.model} starts from random "
            f"values and {consequence}; name pretrained ones with --weights (a file, timm:TAG, hf-hub:ORG/REPO, "
            "a URL)"
        )
    return f"warning: weights: none: {config.model} starts from random values and {consequence}"


def retire_reports(out: Path, log) -> None:
    """A resumed run removes the report page that ``eval`` wrote of it before: it would show the run as it was."""
    found = [name for name in REPORT_FILES if (out / name).is_file()]
    for name in found:
        (out / name).unlink()
    if found:
        log(
            f"removed {', '.join(found)}: written before this resume, they showed the run as it was; "
            f"transferkit eval {shlex.quote(str(out))} writes them again"
        )


def note_old_exports(out: Path, best_before: int | None, best: dict | None, log) -> None:
    """Exports in the run folder are of best.pt as it was: said when the resumed run chose another."""
    found = [name for name in EXPORT_FILES if (out / name).exists()]
    if found and best is not None and best["epoch"] != best_before:
        log(
            f"warning: {', '.join(found)} {'is' if len(found) == 1 else 'are'} of best.pt before this resume "
            f"(epoch {best_before}); best.pt is now epoch {best['epoch']}'s: export again"
        )


def interrupted_line(total: int, out: Path) -> str:
    """What an interrupted run leaves and how to go on, from last.pt itself: the signal may have come between its
    write and anything that would record it."""
    try:  # memory-mapped: the epoch is read, the tensors are not
        held = int(torch.load(out / "last.pt", map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except (OSError, RuntimeError, KeyError, ValueError, TypeError):
        held = 0
    if not held:
        return f"interrupted before the first epoch ended: {out} holds no checkpoint; start the run again"
    return (
        f"interrupted: {out / 'last.pt'} holds epoch {held} of {total}; go on with: "
        f"transferkit train --resume {shlex.quote(str(out))}"
    )


def log_fast(log, use: str, chosen: FastPath) -> None:
    """The kernels chosen for ``use`` in one short line, and the measurement behind them as a detail."""
    log(f"kernels for {use}: {kernel_label(chosen.channels_last, chosen.precision)} ({_kernels_why(chosen)})")
    detail(log, f"fast path for {use}: {kernel_label(chosen.channels_last, chosen.precision)}, {chosen.reason}")


def _kernels_why(chosen: FastPath) -> str:
    """How the kernels were chosen, in a few words: their speed against NCHW fp32, what measuring cost."""
    speeds, label = chosen.images_per_second, kernel_label(chosen.channels_last, chosen.precision)
    base = speeds.get(kernel_label(False, "fp32"))
    if not speeds or label not in speeds:
        return chosen.reason.split(";")[0].split(": ")[0][:80]
    words = ["kept measurement" if chosen.reason.startswith("reused") else "measured"]
    if base and label != kernel_label(False, "fp32"):
        words.append(f"{speeds[label] / base:.2f}x NCHW fp32")
    if chosen.measuring_seconds:
        words.append(f"+{chosen.measuring_seconds:.1f} s")
    if chosen.batch_size:
        words.append(f"batches of {chosen.batch_size}")
    return ", ".join(words)
