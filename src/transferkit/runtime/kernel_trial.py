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

Inference kernels and batch size are chosen the same way on the first batches of a pass whose
outputs are kept, the frozen layers' cache (:class:`InferenceTrial`): a freeze run at 96 px
otherwise spent 6.4 s measuring before an 18.7 s pass.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .._text import one_line
from .fastpath import PRECISION_MARGIN, FastPath, autocast, keep_decision, kernel_label, pick_kernels

__all__ = ["LEVEL", "MAX_TIMED", "MIN_TIMED", "InferenceTrial", "KernelTrial"]

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
    timed_on: str = "the first training steps"  # what the steps are, for the decision's reason
    times: dict[tuple[bool, str], list[float]] = field(default_factory=dict)  # seconds per image of each step
    decided: FastPath | None = None
    failed: dict[str, str] = field(default_factory=dict)  # candidates a layer cannot run, and why
    _queue: list[tuple[bool, str]] = field(default_factory=list)
    _warm: set = field(default_factory=set)
    _rounds: int = 0
    _current: tuple[bool, str] | None = None
    _spent: list[float] = field(default_factory=lambda: [0.0, 0])  # seconds and images of every step until decided

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
        self._spent[0] += seconds
        self._spent[1] += images
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

    def settle(self, at: str = "the end of the phase's first epoch") -> FastPath:
        """The decision, made now on the steps timed so far if the rule has not decided yet (not kept)."""
        if self.decided is None:
            if min(len(t) for t in self.times.values()) == 0:
                first = self.options[0]
                self.decided = FastPath(*first, f"too few steps to time the kernels: {kernel_label(*first)}")
            else:
                self._decide(f"decided at {at} on the steps timed", keep=False)
        return self.decided

    def _rates(self) -> dict[str, float]:
        return {kernel_label(*o): 1 / statistics.median(t) if t else 0.0 for o, t in self.times.items()}

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
            f"measured on {self.timed_on}: {rates[kernel_label(*best)]:.0f} images/s against "
            f"{rates[baseline]:.0f} for {baseline} ({', '.join(f'{k} {v:.0f}' for k, v in rates.items())}); {how}"
        )
        reason += "".join(f"; {k} cannot run ({v})" for k, v in self.failed.items())
        seconds, images = self._spent
        cost = max(0.0, seconds - images / rates[kernel_label(*best)])
        reason += f"; timing cost {cost:.1f} s over the chosen kernels"
        self.decided = FastPath(best[0], best[1], reason, rates, measuring_seconds=cost)
        if keep and self.key is not None:
            keep_decision(self.key, self.decided)

    @staticmethod
    def memory_format(option: tuple[bool, str]) -> torch.memory_format:
        return torch.channels_last if option[0] else torch.contiguous_format


@dataclass
class InferenceTrial:
    """Inference kernels and batch size chosen on the first batches of a pass whose outputs are all kept.

    The candidates first run batches of ``batch_size``, timed and decided as by :class:`KernelTrial`;
    then the winner's batch is doubled while that is faster per image (one untimed batch at a new
    size, its kernels created there, then ``SIZE_TIMED`` timed), up to ``max_batch_size``. On a CPU
    large batches are often slower: lite0 at 224 px runs 2.7x faster in batches of 16 than of 128.
    :meth:`run` re-cuts the pass's batches and sets each candidate's kernels; ``fallback`` measures
    before the work instead, for a run where no such pass comes (:meth:`result`).
    """

    options: list[tuple[bool, str]]
    key: str | None = None  # where the decision is kept (None: not kept)
    batch_size: int = 16
    max_batch_size: int = 256
    fallback: Callable[[], FastPath] | None = None
    decided: FastPath | None = None
    SIZE_TIMED = 2

    def __post_init__(self):
        self.kernels = KernelTrial(self.options, timed_on="the first inference batches")
        self.sizes: dict[int, float] = {}  # median seconds per image at each batch size timed, the winner's kernels
        self._size = self.batch_size  # the size being timed once the kernels are decided
        self._taken: list[float] = []  # its timings so far
        self._spent = [0.0, 0]  # seconds and images of every batch until decided
        self._timing = False  # whether the batch under way is timed
        self.option = self.options[0]

    def timing(self, work: str) -> InferenceTrial:
        """Names the work whose first batches are timed, for the decision's reason."""
        self.kernels.timed_on = f"the first batches of {work}"
        return self

    def autocast(self, device: torch.device):
        """The autocast context of the batch under way."""
        return autocast(device, self.option[1])

    def run(self, batches: Iterable, module: nn.Module, prep) -> Iterator:
        """``batches`` re-cut into the batches the trial wants, each with its candidate's memory format set on
        ``module`` and ``prep`` (a :class:`~transferkit.data.preprocess.BatchPrep`); times what the consumer
        does with each batch, which excludes loading and decoding. A batch is a tensor of images, or a
        tuple or list of tensors of one length (images and their labels), re-cut alike."""
        source, parts, count, current = iter(batches), [], 0, None
        while True:
            size = self.next_batch()
            while count < size and (part := next(source, None)) is not None:
                parts.append(part)
                count += len(part[0] if isinstance(part, tuple | list) else part)
            if count == 0:
                return
            batch, rest = _cut(parts, size)
            full = count >= size  # a short last batch times otherwise
            parts, count = ([rest] if rest is not None else []), max(count - size, 0)
            if self.option != current:
                current = self.option
                module.to(memory_format=KernelTrial.memory_format(current))
                prep.channels_last = current[0]
            started = time.perf_counter()
            yield batch
            if full:
                self.record(time.perf_counter() - started, size)

    def settle(self) -> FastPath | None:
        """The decision on what was timed so far (not kept), or None when no batch was timed."""
        if self.decided is not None:
            return self.decided
        if not any(self.kernels.times.values()):
            return None
        chosen = self.kernels.decided or self.kernels.settle(at="the end of the pass")
        self._finish(chosen, keep=False)
        return self.decided

    def result(self) -> FastPath:
        """The decision: the trial's, made now on what was timed if need be, else ``fallback``'s measurement."""
        if self.decided is None:
            self.decided = self.settle() or self.fallback()
        return self.decided

    def next_batch(self) -> int:
        """The size of the coming batch; :attr:`option` is then its kernels (channels_last, precision)."""
        if self.decided is not None:
            self._timing = False
            self.option = (self.decided.channels_last, self.decided.precision)
            return self.decided.inference_batch_size
        option = self.kernels.next_option()
        if option is not None:
            self.option, self._timing = option, True
            return self.batch_size
        self.option = (self.kernels.decided.channels_last, self.kernels.decided.precision)
        self._timing = True
        return self._size

    def record(self, seconds: float, images: int) -> None:
        """The wall time of the batch :meth:`next_batch` announced, on ``images``; decides when the rules allow."""
        if not self._timing or self.decided is not None:
            return
        self._spent[0] += seconds
        self._spent[1] += images
        if self.kernels.decided is None:
            self.kernels.record(seconds, images)
            if (won := self.kernels.decided) is not None:  # the climb starts from the kernels' own batches
                self.sizes[self.batch_size] = 1 / won.images_per_second[kernel_label(won.channels_last, won.precision)]
                self._climb_from(self.batch_size)
            return
        self._taken.append(seconds / images)
        if len(self._taken) > self.SIZE_TIMED:  # the first at a size was its warm-up
            self.sizes[self._size] = statistics.median(self._taken[1:])
            self._climb_from(self._size)

    def _climb_from(self, size: int) -> None:
        """After ``size`` is timed: twice the size while it was faster than half of it, else decide."""
        faster = size == self.batch_size or self.sizes[size] < self.sizes[size // 2]
        if faster and size * 2 <= self.max_batch_size:
            self._size, self._taken = size * 2, []
        else:
            self._finish(self.kernels.decided, keep=True)

    def _finish(self, kernels: FastPath, *, keep: bool) -> None:
        batch = min(self.sizes, key=self.sizes.get) if self.sizes else self.batch_size
        sizes = ", ".join(f"{b}: {1 / v:.0f}" for b, v in self.sizes.items())
        reason = kernels.reason.split("; timing cost")[0]  # the cost is counted here, for the sizes too
        reason += f"; batches of {batch} ({sizes} images/s)" if self.sizes else ""
        seconds, images = self._spent
        cost = max(0.0, seconds - images * self.sizes[batch]) if self.sizes else (kernels.measuring_seconds or 0.0)
        reason += f"; timing cost {cost:.1f} s over the chosen kernels and batch size"
        self.decided = FastPath(
            kernels.channels_last, kernels.precision, reason, kernels.images_per_second, batch, cost
        )
        if keep and self.key is not None:
            keep_decision(self.key, self.decided)


def _cut(parts: list, size: int) -> tuple:
    """The first ``size`` examples of ``parts`` (tensors, or tuples or lists of tensors), and the rest (None: none)."""
    if isinstance(parts[0], tuple | list):
        columns = [_cut([part[i] for part in parts], size) for i in range(len(parts[0]))]
        batch = type(parts[0])(head for head, _ in columns)
        rest = None if columns[0][1] is None else type(parts[0])(tail for _, tail in columns)
        return batch, rest
    joined = torch.cat(parts) if len(parts) > 1 else parts[0]
    return joined[:size], (joined[size:] if len(joined) > size else None)
