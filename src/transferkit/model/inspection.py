"""Look at a model: its module tree with output shapes, its parameters, and their values."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .._table import Table
from ..errors import SurgeryError
from ._trace import trace

__all__ = ["LayerInfo", "ParamInfo", "layer_table", "parameter_table", "parameter_values"]


@dataclass
class LayerInfo:
    name: str
    type: str
    depth: int
    output_shape: list[tuple[int, ...]] | None  # None when the dry run never reached it
    params: int  # the module's own and its children's
    trainable: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    numel: int
    trainable: bool
    dtype: str

    def to_dict(self) -> dict:
        return asdict(self)


def layer_table(
    model: nn.Module,
    *,
    input_size: tuple[int, ...] | None = None,
    max_depth: int | None = None,
) -> Table:
    """Every module in definition order with its output shape from a dry run and its parameter counts.

    A list of :class:`LayerInfo` that prints as an indented table (``.to_pandas()`` for a DataFrame).

    Examples:
        >>> [(l.name, l.output_shape) for l in layer_table(resnet34, max_depth=1)][-1]
        ('fc', [(1, 1000)])
    """
    _, records, _ = trace(model, input_size)
    outputs: dict[str, list] = {}
    for record in records:
        outputs.setdefault(record.name, record.output_shapes)
    rows = []
    for name, module in model.named_modules():
        depth = 0 if not name else name.count(".") + 1
        if max_depth is not None and depth > max_depth:
            continue
        params = list(module.parameters())
        rows.append(
            LayerInfo(
                name=name,
                type=type(module).__name__,
                depth=depth,
                output_shape=outputs.get(name),
                params=sum(p.numel() for p in params),
                trainable=sum(p.numel() for p in params if p.requires_grad),
            )
        )
    return Table(rows, title=f"layers of {type(model).__name__}", shown=_layer_row)


def _layer_row(row: LayerInfo) -> dict:
    shapes = " ".join(str(tuple(s)) for s in row.output_shape or []) or "-"
    return {
        "layer": "  " * max(row.depth - 1, 0) + (row.name or "(model)"),
        "type": row.type,
        "output": shapes,
        "params": row.params,
        "trainable": row.trainable,
    }


def parameter_table(model: nn.Module) -> Table:
    """Each parameter once, with its shape and whether it trains: a list of :class:`ParamInfo` that prints as a
    table (``.to_pandas()`` for a DataFrame)."""
    rows = [
        ParamInfo(name, tuple(p.shape), p.numel(), p.requires_grad, str(p.dtype).removeprefix("torch."))
        for name, p in model.named_parameters()
    ]
    return Table(rows, title=f"parameters of {type(model).__name__}", shown=_parameter_row)


def _parameter_row(row: ParamInfo) -> dict:
    return {**asdict(row), "shape": " x ".join(map(str, row.shape)) or "scalar"}


def parameter_values(model: nn.Module, path: str, *, first: int = 8) -> dict:
    """Statistics and the first values of a parameter or buffer, by name (``layer1.0.bn1.running_mean``).

    Examples:
        >>> parameter_values(model, "fc.bias")["shape"]
        [10]
    """
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    if path not in tensors:
        close = difflib.get_close_matches(path, tensors, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else " parameter_table(model) lists every name."
        raise SurgeryError(f"No parameter or buffer named '{path}'.{hint}", layer=path)
    t = tensors[path].detach()
    values = t.float() if t.is_floating_point() or t.dtype == torch.bool else t.double()
    flat = values.flatten()
    return {
        "name": path,
        "shape": list(t.shape),
        "dtype": str(t.dtype).removeprefix("torch."),
        "trainable": bool(getattr(tensors[path], "requires_grad", False)),
        "mean": flat.mean().item() if flat.numel() else None,
        "std": flat.std().item() if flat.numel() > 1 else None,
        "min": flat.min().item() if flat.numel() else None,
        "max": flat.max().item() if flat.numel() else None,
        "first": flat[:first].tolist(),
    }
