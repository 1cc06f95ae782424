"""How long each strategy would take, from measured steps, and the advice within a time budget.

A strategy's seconds are estimated from the throughputs the advice measures: forward passes (the
probe's), and a few training steps of the whole network and of each tail of stages that
``head --unfreeze-last N`` would train. The frozen layers of a strategy that trains the head alone
run once (their output is cached); the head's own epochs are negligible.

Within a budget, the advice stays what the probes chose when it fits; otherwise it trains less of
the same: the strategy that trains the most of the network, no more than advised, among those that fit
(``full`` and ``lp-ft`` all of it, ``head --unfreeze-last N`` its last N stages, ``freeze`` the head).
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn

from ..data.preprocess import BatchPrep
from ..tasks.objective import loss_function
from ..train.config import TrainConfig
from ..train.strategies import plan_phases
from .probe import Depth

__all__ = ["estimate_seconds", "within_budget"]


def estimate_seconds(
    config: TrainConfig,
    model: nn.Module,
    data,
    points: list[Depth],
    forward: float,
    advice: dict,
    train_images: int | None = None,
    every_depth: bool = False,
) -> dict[str, float]:
    """Seconds each strategy would take over ``config.epochs``: ``freeze``, ``full``, ``lp-ft`` and the advised one.

    ``forward`` is images per second through the frozen network; ``train_images`` the run's training images where
    ``data`` holds a sample of them. ``every_depth`` adds ``head --unfreeze-last N`` for each probed depth.
    """
    n_train = train_images or len(data.train.decoded.labels)
    n_val = len(data.val.decoded.labels)
    full = _train_speed(model, data, None)
    commands = {"--strategy freeze": ("freeze", None), "--strategy full": ("full", None)}
    if config.epochs >= 2:
        commands["--strategy lp-ft"] = ("lp-ft", None)
    if every_depth:
        for n in sorted({p.stages_after for p in points if p.stages_after > 1}, reverse=True):
            commands[f"--strategy head --unfreeze-last {n}"] = ("head", n)
    if advice["strategy"] == "head":
        commands[advice["command"]] = ("head", advice["unfreeze_last"])
    cache = (n_train + n_val) / forward  # frozen layers run once; the head's epochs are negligible
    speeds = {}
    result = {}
    for command, (strategy, keep) in commands.items():
        seconds = 0.0
        for phase in plan_phases(strategy, config.epochs, unfreeze_last=keep):
            if phase.trains == "head":
                seconds += cache
            else:
                if phase.trains != "all" and keep not in speeds:
                    speeds[keep] = _train_speed(model, data, keep)
                speed = full if phase.trains == "all" else speeds[keep]
                seconds += phase.epochs * (n_train / speed + n_val / forward)
        result[command] = seconds
    return result


def within_budget(advice: dict, estimates: dict[str, float], budget: float) -> dict:
    """``advice`` if its estimate fits ``budget`` seconds, else the strategy that trains the most of what was advised
    among those that fit (the cheapest when none does); the reason says which and why."""
    took = estimates.get(advice["command"])
    if took is None or took <= budget:
        return advice
    allowed = _extent(advice["command"])
    fits = [c for c in estimates if estimates[c] <= budget and _extent(c) <= allowed]
    if fits:
        chosen = max(fits, key=lambda c: (_extent(c), -estimates[c]))
        why = "the one that trains the most of what was advised within it"
    else:
        chosen = min(estimates, key=estimates.get)
        why = "the cheapest, as none fits"
    words = chosen.split()
    changed = {"strategy": words[1], "command": chosen, "over_budget": advice["command"]}
    if words[1] == "head":
        changed["unfreeze_last"] = int(words[-1])
    return {
        **{k: v for k, v in advice.items() if k != "unfreeze_last"},
        **changed,
        "reason": advice["reason"] + f"; but {advice['command']} would take about {took:.0f} s, over the budget of "
        f"{budget:.0f} s, so {chosen} (about {estimates[chosen]:.0f} s), {why}",
    }


def _extent(command: str) -> float:
    """How much of the network ``command`` trains: stages from the output (the head is one), all of it for inf."""
    words = command.split()
    if words[1] == "head":
        return int(words[-1])
    return 1 if words[1] == "freeze" else float("inf")


def _train_speed(model: nn.Module, data, keep_last: int | None, batch: int = 16) -> float:
    """Training images per second: forward and backward of a few batches, the first stages frozen if asked."""
    from ..model.freeze import freeze_stages, unfreeze

    images = data.train.decoded.images[:batch]
    labels = data.train.decoded.labels[:batch]
    prep = BatchPrep(data.preprocessing, torch.device("cpu"), channels_last=False)
    unfreeze(model, "*")
    if keep_last is not None:
        freeze_stages(model, keep_last=keep_last)
    model.train()
    times = []
    for _ in range(2):
        step_started = time.perf_counter()
        loss = loss_function(data.task, scale=data.target_scale)(model(prep(images)), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - step_started)
    unfreeze(model, "*")
    model.eval()
    return len(images) / min(times[1:])  # the first step pays for allocations
