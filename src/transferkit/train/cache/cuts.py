"""Where a phase's frozen prefix ends: three cuts, each found on the phase's one dry run and checked on real images,
computed and keyed through the same four operations, and tried in this order (:func:`choose_cut`):

1. ``boundary``: the output of the last frozen module before the first that trains, where the network runs
   its modules in sequence up to there; the frozen modules become identities
   (:mod:`~transferkit.train.cache.feature_cache`);
2. ``pre_logits``: timm's cut at the classifier's input (``forward_head(pre_logits=True)``), where only the
   classifier trains and the network does more than chain modules before it (:mod:`~transferkit.train.cache.head_cut`);
3. ``input``: the input of the first block that trains, where code between modules glues the frozen blocks (a ViT's
   tokens) and blocks train too (:mod:`~transferkit.train.cache.entry_cut`).

A cut is kept only where the network cut there gives its own outputs on the sample, within :data:`CUT_TOLERANCE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from .entry_cut import check_entry, entered, entry_in, entry_key, iter_entry_inputs
from .feature_cache import (
    Boundary,
    FrozenTrace,
    boundary_in,
    cache_key,
    check_boundary,
    fold_batchnorm,
    iter_boundary_outputs,
    trace_frozen,
    truncated,
)
from .head_cut import check_pre_logits, head_cut_key, iter_pre_logits, pre_logits_boundary

__all__ = ["CUTS", "CUT_TOLERANCE", "Chosen", "Cut", "choose_cut"]

CUT_TOLERANCE = 1e-4  # the largest difference, relative to the output's scale, a cut may make on real images

Outputs = Callable[[Iterable[torch.Tensor]], Iterator[torch.Tensor]]


class Cut:
    """One way to cut a frozen prefix. ``find`` says where (a :class:`Boundary`, or None), ``check`` how far the cut
    network is from the whole on images, ``compute`` what runs the prefix and yields its activations per batch,
    ``key`` what the activations depend on; ``tail`` is what trains on them and the block it runs in."""

    kind = ""

    def find(self, model: nn.Module, head: str, traced: FrozenTrace | None, sample, *, prep) -> Boundary | None:
        raise NotImplementedError

    def check(self, model: nn.Module, head: str, boundary: Boundary, sample, *, prep) -> float | None:
        raise NotImplementedError

    def compute(self, model: nn.Module, boundary: Boundary, sample, *, prep, autocast) -> tuple[nn.Module, Outputs]:
        raise NotImplementedError

    def key(self, model: nn.Module, head: str, boundary: Boundary, **facts) -> str:
        raise NotImplementedError

    def tail(self, model: nn.Module, head: str, boundary: Boundary) -> tuple[nn.Module, Callable]:
        raise NotImplementedError


class AtBoundary(Cut):
    kind = "boundary"

    def find(self, model, head, traced, sample, *, prep):
        return boundary_in(traced)

    def check(self, model, head, boundary, sample, *, prep):
        return check_boundary(model, boundary, sample, prep=prep)

    def compute(self, model, boundary, sample, *, prep, autocast):
        # The prefix runs with its BatchNorms folded into the convolutions when that gives the same output.
        runner = fold_batchnorm(model, boundary, sample, prep=prep) or model
        return runner, partial(iter_boundary_outputs, runner, boundary, prep=prep, autocast=autocast)

    def key(self, model, head, boundary, **facts):
        return cache_key(model, boundary, **facts)

    def tail(self, model, head, boundary):
        return model, partial(truncated, model, boundary)


class AtPreLogits(Cut):
    kind = "pre_logits"

    def find(self, model, head, traced, sample, *, prep):
        return pre_logits_boundary(model, head, sample, prep=prep)

    def check(self, model, head, boundary, sample, *, prep):
        return check_pre_logits(model, head, sample, prep=prep)

    def compute(self, model, boundary, sample, *, prep, autocast):
        return model, partial(iter_pre_logits, model, prep=prep, autocast=autocast)

    def key(self, model, head, boundary, **facts):
        return head_cut_key(model, head, **facts)

    def tail(self, model, head, boundary):
        return model.get_submodule(head), nullcontext


class AtEntry(Cut):
    kind = "input"

    def find(self, model, head, traced, sample, *, prep):
        return entry_in(traced)

    def check(self, model, head, boundary, sample, *, prep):
        return check_entry(model, boundary, sample, prep=prep)

    def compute(self, model, boundary, sample, *, prep, autocast):
        return model, partial(iter_entry_inputs, model, boundary, prep=prep, autocast=autocast)

    def key(self, model, head, boundary, **facts):
        return entry_key(model, boundary, **facts)

    def tail(self, model, head, boundary):
        return model, partial(entered, model, boundary)


CUTS: tuple[Cut, ...] = (AtBoundary(), AtPreLogits(), AtEntry())


@dataclass
class Chosen:
    """The cut a phase gets, where it is, and the classifier's path."""

    cut: Cut
    boundary: Boundary
    head: str

    @property
    def kind(self) -> str:
        return self.cut.kind

    def key(self, model: nn.Module, **facts) -> str:
        return self.cut.key(model, self.head, self.boundary, **facts)

    def compute(self, model: nn.Module, sample, *, prep, autocast) -> tuple[nn.Module, Outputs]:
        return self.cut.compute(model, self.boundary, sample, prep=prep, autocast=autocast)

    def tail(self, model: nn.Module) -> tuple[nn.Module, Callable[[], AbstractContextManager]]:
        return self.cut.tail(model, self.head, self.boundary)


def choose_cut(model: nn.Module, head: str, sample: torch.Tensor, input_size: tuple[int, ...], *, prep) -> Chosen | str:
    """The first of :data:`CUTS` that gives the network's own outputs on ``sample``; or why none does. The model is
    traced once for all of them."""
    traced = trace_frozen(model, input_size)
    for cut in CUTS:
        boundary = cut.find(model, head, traced, sample, prep=prep)
        difference = None if boundary is None else cut.check(model, head, boundary, sample, prep=prep)
        if difference is not None and difference <= CUT_TOLERANCE:
            return Chosen(cut, boundary, head)
    boundary = boundary_in(traced)
    if boundary is None:
        return "the first layer to run already trains"
    return f"the network does more than run its modules in sequence at '{boundary.path}'"
