"""Training kernels chosen on the run's own first steps, instead of on extra steps before them.

A probe that times each candidate (memory format, precision) before training costs steps that
train nothing: lite0 at 64 px spent 17 s measuring before a 51 s first epoch. Here the first
steps of the phase *are* the measurement. Each candidate trains one untimed step (its kernels are
created there), then timed steps in interleaved rounds of alternating order, so that load
elsewhere hits every candidate alike. After each round with at least ``MIN_TIMED`` steps of
each, the fastest by median must be faster than every other by an exact one-sided Mann-Whitney
test at ``LEVEL`` (with three steps each: all three of its times below all of the other's), and
a reduced precision must be so after its times are multiplied by the probe's margin. Candidates
that stay indistinguishable are decided by medians after ``MAX_TIMED`` steps each.

Every step updates the model as usual, so the trial costs only the slower candidates' extra time
on their few steps. The decision is kept for the machine like the probe's (same key), and reused.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from .._text import one_line
from .fastpath import PRECISION_MARGIN, FastPath, keep_decision, kernel_label, pick_kernels

__all__ = ["LEVEL", "MAX_TIMED", "MIN_TIMED", "KernelTrial"]

MIN_TIMED = 3
MAX_TIMED = 8
LEVEL = 0.05


@dataclass
class KernelTrial:
    """Which kernels the next training step uses, until the timed steps decide.

    Use: ``option = trial.next_option()`` before a step (None once decided),
    ``trial.record(seconds, images)`` after it; ``trial.decided`` is the :class:`FastPath` once
    there is one, and :meth:`settle` decides on what was timed if the epoch ends first.
    """

    options: list[tuple[bool, str]]
    key: str | None = None  # where the decision is kept (None: not kept)
    times: dict[tuple[bool, str], list[float]] = field(default_factory=dict)  # seconds per image of each step
    decided: FastPath | None = None
    failed: dict[str, str] = field(default_factory=dict)  # candidates a layer cannot run, and why
    _queue: list[tuple[bool, str]] = field(default_factory=list)
    _warm: set = field(default_factory=set)
    _rounds: int = 0
    _current: tuple[bool, str] | None = None

    def __post_init__(self):
        self.options = list(self.options)
        self.times = {option: [] for option in self.options}

    def next_option(self) -> tuple[bool, str] | None:
        """The candidate the coming step trains with, or None when the trial has decided."""
        if self.decided is not None:
            return None
        if not self._queue:  # a round: the first warms every candidate up, the order alternates
            self._queue = list(self.options if self._rounds % 2 == 0 else self.options[::-1])
            self._rounds += 1
        self._current = self._queue[0]
        return self._current

    def record(self, seconds: float, images: int) -> None:
        """The wall time of the step :meth:`next_option` announced, on ``images``; decides when the rule allows."""
        option, self._current = self._current, None
        if option is None or self.decided is not None:
            return
        self._queue.remove(option)
        if option in self._warm:
            self.times[option].append(seconds / max(images, 1))
        self._warm.add(option)
        if self._queue:
            return
        timed = min(len(t) for t in self.times.values())
        if timed >= MAX_TIMED:
            self._decide(f"undecided after {timed} timed steps each: by medians")
        elif timed >= MIN_TIMED:
            best = self._best()
            p = max(self._p_value(best, other) for other in self.options if other != best)
            if p <= LEVEL:
                self._decide(f"faster than the others at p = {p:.3f} (one-sided Mann-Whitney, {timed} steps each)")

    def drop(self, option: tuple[bool, str], error: Exception) -> None:
        """A candidate some layer cannot run (peft's DoRA convolutions refuse a channels-last weight): not a choice."""
        self.failed[kernel_label(*option)] = one_line(error, 80)
        self.options.remove(option)
        self.times.pop(option, None)
        self._queue = [o for o in self._queue if o != option]
        self._current = None
        if not self.options:
            raise RuntimeError(f"no kernel candidate runs this model: {self.failed}") from error
        if len(self.options) == 1:
            only = self.options[0]
            reasons = "; ".join(f"{k} cannot run ({v})" for k, v in self.failed.items())
            self.decided = FastPath(*only, f"{kernel_label(*only)}, the only candidate that runs: {reasons}")
            if self.key is not None:
                keep_decision(self.key, self.decided)

    def settle(self) -> FastPath:
        """The decision, made now on the steps timed so far if the rule has not decided yet (not kept)."""
        if self.decided is None:
            if min(len(t) for t in self.times.values()) == 0:
                first = self.options[0]
                self.decided = FastPath(*first, f"too few steps to time the kernels: {kernel_label(*first)}")
            else:
                self._decide("decided at the end of the phase's first epoch on the steps timed", keep=False)
        return self.decided

    def _rates(self) -> dict[str, float]:
        return {
            kernel_label(*o): 1 / statistics.median(t) if t else 0.0 for o, t in self.times.items()
        }

    def _best(self) -> tuple[bool, str]:
        return pick_kernels(self.options, self._rates())

    def _p_value(self, best: tuple[bool, str], other: tuple[bool, str]) -> float:
        from scipy.stats import mannwhitneyu

        scale = PRECISION_MARGIN if best[1] != "fp32" and other[1] == "fp32" else 1.0
        faster = [t * scale for t in self.times[best]]
        return float(mannwhitneyu(faster, self.times[other], alternative="less", method="exact").pvalue)

    def _decide(self, how: str, *, keep: bool = True) -> None:
        rates = self._rates()
        best = self._best()
        baseline = kernel_label(False, "fp32") if (False, "fp32") in self.options else min(rates, key=rates.get)
        reason = (
            f"measured on the first training steps: {rates[kernel_label(*best)]:.0f} images/s against "
            f"{rates[baseline]:.0f} for {baseline} ({', '.join(f'{k} {v:.0f}' for k, v in rates.items())}); {how}"
        )
        reason += "".join(f"; {k} cannot run ({v})" for k, v in self.failed.items())
        self.decided = FastPath(best[0], best[1], reason, rates)
        if keep and self.key is not None:
            keep_decision(self.key, self.decided)

    @staticmethod
    def memory_format(option: tuple[bool, str]) -> torch.memory_format:
        return torch.channels_last if option[0] else torch.contiguous_format
