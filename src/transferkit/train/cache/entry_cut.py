"""The input of the first module that trains, for networks whose frozen blocks are glued by code between modules.

A ViT trained with its last blocks unfrozen has a frozen prefix of the patch embedding, then the
class token and position embeddings (added in ``forward_features``, outside any module), then the
first blocks. The dry-run boundary of :mod:`transferkit.train.cache.feature_cache` cannot skip such a
prefix: making its modules identities would add the tokens a second time. Here the cache holds
the *input* of the first module that trains (``blocks.10`` of a 12-block ViT), captured by a
forward pre-hook with the pass stopped there, so that only the frozen blocks run.

In training, ``model(cached)`` runs with every frozen module of the prefix replaced by a stand-in
that returns zeros of the shape the dry run recorded (so the glue code runs, on cheap
placeholders), and a pre-hook hands the cached tensor to the first module that trains. A check on
real images confirms that this gives the full model's output; where the glue carries something
past that module (a skip connection from an earlier stage), it does not, and nothing is cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from ...model._trace import NORM_TYPES, module_modes
from ...model.freeze import held_layers
from ...model.surgery import get_module, swapped
from .feature_cache import Boundary, FrozenTrace, ancestors, outermost, relative_difference, tensors_key, trace_frozen

__all__ = ["check_entry", "entered", "entry_cut", "entry_in", "entry_key", "iter_entry_inputs"]


class _Reached(Exception):
    """Stops a forward pass at the first module that trains, once its input is captured."""


class _StandIn(nn.Module):
    """Returns zeros of a frozen module's recorded output shape, for the batch that ``source`` holds.

    Other attributes are the frozen module's (a ViT's glue reads ``patch_embed.grid_size``); it
    is not registered as a child, so its parameters are not counted twice.
    """

    def __init__(self, module: nn.Module, shape: tuple[int, ...], source: list[torch.Tensor]):
        super().__init__()
        self.shape, self.source = shape, source
        object.__setattr__(self, "_replaced", module)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_replaced"], name)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        ref = self.source[0]
        return ref.new_zeros((ref.shape[0], *self.shape))


def entry_cut(model: nn.Module, input_size: tuple[int, ...]) -> Boundary | None:
    """The first module that trains, with the frozen modules before it and their output shapes; None if there is none.

    The entry is the outermost module around the first live one inside which nothing with
    parameters ran before it (a ViT's ``blocks.10``, not its ``norm1``; a MaxViT stage, not the
    convolution of its shortcut). It must run once and take its input positionally;
    every module that finished before it must return a single tensor and not run again after it.
    """
    return entry_in(trace_frozen(model, input_size))


def entry_in(traced: FrozenTrace | None) -> Boundary | None:
    """:func:`entry_cut` on a dry run already made."""
    if traced is None or traced.first_live is None:
        return None
    events, records, modules = traced.events, traced.records, traced.modules
    starts = [path for kind, path in events if kind == "start"]
    first = _entry_start(events, traced.first_live, modules)
    entry = events[first][1]
    if not entry or starts.count(entry) != 1:
        return None
    done = {path for kind, path in events[:first] if kind == "end" and path}
    stubbed = outermost(done)
    later = {path for kind, path in events[first:] if kind == "start"}
    if not stubbed or any(path == s or path.startswith(s + ".") for path in later for s in stubbed):
        return None
    shapes: dict[str, list[tuple[int, ...]]] = {}
    inputs: dict[str, list[tuple[int, ...]]] = {}
    for record in records:
        shapes.setdefault(record.name, record.output_shapes)
        inputs.setdefault(record.name, record.input_shapes)
    if any(len(shapes.get(s, [])) != 1 for s in stubbed) or not inputs.get(entry):
        return None
    stubbed.sort(key=starts.index)
    return Boundary(
        entry, stubbed, inputs[entry][0][1:], kind="input", stand_ins={s: shapes[s][0][1:] for s in stubbed}
    )


def _entry_start(events: list[tuple[str, str]], live: int, modules: dict[str, nn.Module]) -> int:
    """The start of the outermost module around event ``live`` inside which nothing with parameters ran before it.

    Modules inside the entry run again in every step, so only parameter-free ones (a pooling
    shortcut) may precede the live one there: a MaxViT stage, not its shortcut's convolution.
    """
    path = events[live][1]
    for ancestor in [*ancestors(path), path]:
        start = next((i for i, (kind, p) in enumerate(events[: live + 1]) if kind == "start" and p == ancestor), None)
        if start is None:  # a container that never runs (ModuleList)
            continue
        ran = [p for kind, p in events[start + 1 : live] if kind == "start"]
        if not any(any(True for _ in modules[p].parameters(recurse=False)) for p in ran):
            return start
    return live


def _capture(model: nn.Module, boundary: Boundary, x: torch.Tensor) -> torch.Tensor:
    captured: list[torch.Tensor] = []

    def reach(module, args):
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError(f"'{boundary.path}' takes no positional tensor")
        captured.append(args[0])
        raise _Reached

    handle = model.get_submodule(boundary.path).register_forward_pre_hook(reach)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"the forward pass never reached '{boundary.path}'")
    return captured[0]


@torch.no_grad()
def iter_entry_inputs(
    model: nn.Module, boundary: Boundary, batches: Iterable[torch.Tensor], *, prep, autocast
) -> Iterator[torch.Tensor]:
    """The entry module's input (float32, on the CPU) for each batch: only the frozen prefix runs."""
    with module_modes(model):
        for images in batches:
            with autocast():
                yield _capture(model, boundary, prep(images)).float().cpu()


@contextmanager
def entered(model: nn.Module, boundary: Boundary):
    """Within the block, ``model(cached)`` skips the frozen prefix and feeds ``cached`` to the entry module."""
    source: list[torch.Tensor] = []

    def hold(module, args):
        source[:] = [args[0]]

    def enter(module, args):
        return (source[0], *args[1:])

    stand_ins = {path: _StandIn(get_module(model, path), shape, source) for path, shape in boundary.stand_ins.items()}
    with swapped(model, stand_ins):
        handles = [
            model.register_forward_pre_hook(hold),
            model.get_submodule(boundary.path).register_forward_pre_hook(enter),
        ]
        try:
            yield model
        finally:
            for handle in handles:
                handle.remove()


@torch.no_grad()
def check_entry(model: nn.Module, boundary: Boundary, images: torch.Tensor, *, prep) -> float | None:
    """Largest relative difference between the full model and the entered one on ``images``; None if it fails."""
    with module_modes(model):
        x = prep(images)
        try:
            cached = _capture(model, boundary, x)
            full = model(x).float()
            with entered(model, boundary):
                short = model(cached).float()
        except Exception:  # the glue needs more than zeros of the right shape
            return None
    return relative_difference(short, full)


def entry_key(model: nn.Module, boundary: Boundary, *, data_fingerprint: str, preprocessing: dict) -> str:
    """Changes with any tensor that training does not change (``pos_embed`` too), the data or the preprocessing."""
    header = {"entry": boundary.path, "data": data_fingerprint, "pre": preprocessing}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    held = set(held_layers(model))
    updating = tuple(
        path + "."
        for path, m in model.named_modules()
        if isinstance(m, NORM_TYPES) and m.track_running_stats and path not in held
    )
    tensors = ((n, t) for n, t in model.state_dict().items() if n not in trainable and not n.startswith(updating))
    return tensors_key(header, tensors)
