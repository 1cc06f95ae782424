"""Dry-run forward passes that record every module's input and output shapes.

One mechanism serves both surgery validation (which layer stops fitting) and inspection
(the module tree with output shapes).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..data.preprocess import input_size_of

__all__ = [
    "CONV_TYPES",
    "NORM_TYPES",
    "LayerRecord",
    "TraceFailure",
    "describe_expectation",
    "is_random",
    "module_modes",
    "trace",
]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Layers with running statistics: the ones whose train/eval mode changes what they compute.
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def is_random(module: nn.Module) -> bool:
    """A layer that draws random numbers in train mode: Dropout, or a DropPath (stochastic depth) that drops."""
    if isinstance(module, _DROPOUTS):
        return module.p > 0
    return "DropPath" in type(module).__name__ and getattr(module, "drop_prob", 0) > 0


@dataclass
class LayerRecord:
    """What one module saw during a dry run."""

    name: str  # dotted path, "" for the model itself
    type: str
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    tensor_output: bool = True  # one tensor, not a tuple or a transformers ModelOutput


@dataclass
class TraceFailure:
    """Where a dry run stopped: the deepest module that was running, and what it was given."""

    layer: str
    module: nn.Module
    input_shapes: list[tuple[int, ...]]
    error: Exception
    last_finished: LayerRecord | None


def _shapes(values) -> list[tuple[int, ...]]:
    if isinstance(values, torch.Tensor):
        return [tuple(values.shape)]
    if isinstance(values, (tuple, list)):
        return [s for v in values for s in _shapes(v)]
    if isinstance(values, dict):
        return [s for v in values.values() for s in _shapes(v)]
    return []


@contextmanager
def module_modes(model: nn.Module, *, training: bool = False):
    """Put the model in train or eval mode for the block, then restore every module's own flag.

    Restoring flags one by one, rather than calling ``model.train()``, keeps per-module decisions
    such as frozen BatchNorm held in eval mode.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def trace(
    model: nn.Module,
    input_size: tuple[int, ...] | None = None,
    *,
    batch_size: int = 1,
    events: list[tuple[str, str]] | None = None,
) -> tuple[torch.Tensor | None, list[LayerRecord], TraceFailure | None]:
    """Run one forward pass in eval mode without gradients and record every module.

    Returns the output (None when the pass failed), the records of the modules that finished,
    in the order they finished, and the failure if there was one. ``events``, when given,
    receives ``("start" | "end", path)`` for every module call in execution order.
    """
    size = tuple(input_size) if input_size is not None else input_size_of(model)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(batch_size, *size, device=device, dtype=dtype)  # (N, C, H, W)

    names: dict[int, str] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), n)  # a shared module goes by its first path, as in named_modules()
    stack: list[tuple[str, nn.Module, list[tuple[int, ...]]]] = []
    records: list[LayerRecord] = []

    def pre_hook(module, args, kwargs):
        stack.append((names.get(id(module), "?"), module, _shapes(args) + _shapes(kwargs)))
        if events is not None:
            events.append(("start", stack[-1][0]))

    def post_hook(module, args, kwargs, output):
        name, _, inputs = stack.pop()
        if events is not None:
            events.append(("end", name))
        records.append(
            LayerRecord(name, type(module).__name__, inputs, _shapes(output), isinstance(output, torch.Tensor))
        )

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    try:
        with module_modes(model), torch.no_grad():
            output = model(x)
        return output, records, None
    except Exception as e:  # any failure inside user code is reported, not raised
        name, module, inputs = stack[-1] if stack else ("", model, [tuple(x.shape)])
        last = records[-1] if records else None
        return None, records, TraceFailure(name, module, inputs, e, last)
    finally:
        for h in handles:
            h.remove()


def describe_expectation(module: nn.Module) -> str | None:
    """What input a layer expects, in words, for the layers whose expectations are known."""
    if isinstance(module, nn.Linear):
        return f"expects {module.in_features} features in the last dimension"
    if isinstance(module, CONV_TYPES):
        return f"expects {module.in_channels} input channels"
    if isinstance(module, NORM_TYPES):
        return f"expects {module.num_features} channels"
    if isinstance(module, nn.LayerNorm):
        return f"expects trailing dimensions {tuple(module.normalized_shape)}"
    if isinstance(module, nn.GroupNorm):
        return f"expects {module.num_channels} channels"
    return None
