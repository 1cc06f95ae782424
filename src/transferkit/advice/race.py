"""A one-epoch race between the advised ``head --unfreeze-last N`` and retraining from one probed depth earlier.

The probes rank depths by what a linear model reads there; how far fine-tuning from a depth gets is another
matter, and between neighbouring depths the probes often cannot tell. On the advice benchmark the probes' depth
ended up to 11.5 points below the best fixed strategy; racing it against the depth before it for one epoch, then
training on the better one, came within a point of the best on all but one dataset, in less time than ``full``
(BENCHMARKS.md, "Advice rule").

Each candidate trains its first epoch exactly as its own run would (the whole run's schedule, same seed, split
and data) in ``OUT/race/<N>``. The one with the better held-out score after it (the run's monitor) goes on in
OUT from where it stopped, as a resumed run does: its epoch counts, only the loser's epoch is spent. The race
folder is removed. Not raced: advice other than ``head``, one-epoch runs, runs with a budget (chosen by their
estimates), ``lr auto`` (each candidate would search its own rate) and distributed runs.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from pathlib import Path

import torch.distributed as dist
import torch.nn as nn

from ..model.factory import is_object_spec
from ..tasks.scores import MONITORS
from ..train import engine
from ..train.config import TrainConfig
from ..train.folder.run_folder import load_run
from ..train.setup import PreparedData

__all__ = ["RACE_EPOCHS", "race", "rival"]

RACE_EPOCHS = 1
# What a race leaves for the run that goes on: its checkpoints, metrics and curves; the rest is written again.
_CARRIED = ("last.pt", "best.pt", "metrics.csv", "tensorboard")


def rival(advice: dict, depths: list[dict]) -> int | None:
    """``--unfreeze-last`` for retraining from the probed depth just before the advised one; None: nothing to race.

    Examples:
        >>> depths = [{"stages_after": n} for n in (5, 4, 2, 1)]
        >>> rival({"strategy": "head", "unfreeze_last": 2}, depths), rival({"strategy": "freeze"}, depths)
        (4, None)
    """
    if advice["strategy"] != "head":
        return None
    earlier = [d["stages_after"] for d in depths if d["stages_after"] > advice["unfreeze_last"]]
    return min(earlier) if earlier else None


def race(
    config: TrainConfig, model: nn.Module, data: PreparedData, advice: dict, depths: list[dict], *, log=print
) -> tuple[dict, dict | None]:
    """Race the advice against :func:`rival`'s for :data:`RACE_EPOCHS`; the winner's advice and the state to go on
    from (a run checkpoint in ``config.out``), or ``advice`` and None where there is nothing to race."""
    other = rival(advice, depths)
    if (
        other is None
        or config.epochs <= RACE_EPOCHS
        or config.budget is not None
        or config.lr == "auto"
        or (dist.is_available() and dist.is_initialized())
    ):
        return advice, None
    out = Path(config.out)
    shutil.rmtree(out / "race", ignore_errors=True)  # an interrupted race's: OUT is this run's, locked
    runs = {}
    for n in (advice["unfreeze_last"], other):
        command = f"--strategy head --unfreeze-last {n}"
        log(f"race: {command} for {RACE_EPOCHS} epoch")
        runs[n] = engine.fit(
            dataclasses.replace(config, strategy="head", unfreeze_last=n, budget=None, out=str(out / "race" / str(n))),
            data=data,
            # a network given as an object cannot be built again: a copy of it, as the probe found it
            module=copy.deepcopy(model) if is_object_spec(config.model) else None,
            stop_after=RACE_EPOCHS,
            log=lambda line, n=n: log(f"race {n}: {line}"),
        )
    scores = {n: r["best_score"] for n, r in runs.items()}
    higher = next(h for key, h in MONITORS.values() if key == scores[other]["name"])
    ours, theirs = scores[advice["unfreeze_last"]]["value"], scores[other]["value"]
    winner = other if (theirs > ours if higher else theirs < ours) else advice["unfreeze_last"]  # ties: the probes'
    said = ", ".join(
        f"--unfreeze-last {n} {scores[n]['name']} {scores[n]['value']:.4f} ({runs[n]['seconds']:.1f} s)" for n in runs
    )
    log(f"race: after {RACE_EPOCHS} epoch, {said}: --strategy head --unfreeze-last {winner} goes on")
    _adopt(out / "race" / str(winner), out)
    shutil.rmtree(out / "race")
    command = f"--strategy head --unfreeze-last {winner}"
    won = {
        **advice,
        "unfreeze_last": winner,
        "command": command,
        "reason": advice["reason"] + f"; raced against --unfreeze-last {other} for {RACE_EPOCHS} epoch ({said}), "
        f"{command} went on",
        "race": {
            "epochs": RACE_EPOCHS,
            "winner": command,
            "candidates": [
                {"command": f"--strategy head --unfreeze-last {n}", **scores[n], "seconds": runs[n]["seconds"]}
                for n in runs
            ],
        },
    }
    return won, load_run(out)


def _adopt(folder: Path, out: Path) -> None:
    """The winner's checkpoints, metrics and curves moved into ``out``, where its run goes on."""
    for name in _CARRIED:
        if (folder / name).exists():
            os.replace(folder / name, out / name)
