"""Compute the activations of a frozen prefix once and train the rest of the network on them.

When a prefix of the network (in execution order) is frozen, deterministic and in eval mode,
its output for an example never changes. The prefix is found from a dry run: the *boundary* is
the outermost module that finishes right before the first module that trains or is random in
training (a trainable layer, a BatchNorm that updates its statistics, Dropout, DropPath). The
modules up to the boundary are then replaced by ``nn.Identity`` while training, so that
``model(cached_activation)`` runs only the rest. A check on real inputs confirms that this gives
the same output as the full model; if the forward does more than chain its modules (a skip
connection across the boundary), nothing is cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.utils import fuse_conv_bn_eval

from ..._storage import mapped_tensor, memory_budget, scratch_tensor
from ...model._trace import NORM_TYPES, is_random, module_modes, trace
from ...model.freeze import held_layers
from ...model.surgery import put_module, swapped
from ...serialization import write_json

__all__ = [
    "Boundary",
    "FrozenTrace",
    "boundary_in",
    "trace_frozen",
    "ancestors",
    "boundary_outputs",
    "iter_boundary_outputs",
    "fold_batchnorm",
    "cache_key",
    "rename_stored",
    "is_live",
    "tensors_key",
    "check_boundary",
    "find_boundary",
    "load_or_compute",
    "outermost",
    "stored_activations",
    "relative_difference",
    "truncated",
]

# fp16 keeps ~3 significant digits; activations are stored in it when the round trip changes
# them by less than this (relative to their scale) and nothing overflows.
_FP16_TOLERANCE = 1e-3


@dataclass
class Boundary:
    """Where the frozen prefix ends: its output is cached; ``stubbed`` modules are skipped."""

    path: str
    stubbed: list[str]
    output_shape: tuple[int, ...]  # per example
    kind: str = "output"  # what is cached: the "output" of ``path``, or the "input" of the first module that trains
    stand_ins: dict[str, tuple[int, ...]] = field(default_factory=dict)  # stubbed path -> output shape, for "input"


def is_live(path: str, module: nn.Module, held: set[str]) -> bool:
    """A module whose output can change between epochs for the same input."""
    if any(p.requires_grad for p in module.parameters(recurse=False)):
        return True
    if path in held:
        return False
    return is_random(module) or (isinstance(module, NORM_TYPES) and module.track_running_stats)


@dataclass
class FrozenTrace:
    """One dry run of a model, read for its frozen prefix: every module's start and end in execution order, the
    shapes recorded, and the index of the first start of a module that trains or is random (None: none does)."""

    events: list[tuple[str, str]]  # ("start" | "end", path)
    records: list
    modules: dict[str, nn.Module]
    first_live: int | None


def trace_frozen(model: nn.Module, input_size: tuple[int, ...] | None = None) -> FrozenTrace | None:
    """The dry run every cut of a phase reads (one per phase); None when the model does not run on ``input_size``."""
    held = set(held_layers(model))
    events: list[tuple[str, str]] = []
    _, records, failure = trace(model, input_size, events=events)
    if failure is not None:
        return None
    modules = dict(model.named_modules())
    first_live = next(
        (i for i, (kind, path) in enumerate(events) if kind == "start" and is_live(path, modules[path], held)), None
    )
    return FrozenTrace(events, records, modules, first_live)


def find_boundary(model: nn.Module, input_size: tuple[int, ...] | None = None) -> Boundary | None:
    """The frozen prefix's last module, or None when the first module to run already trains."""
    return boundary_in(trace_frozen(model, input_size))


def boundary_in(traced: FrozenTrace | None) -> Boundary | None:
    """:func:`find_boundary` on a dry run already made."""
    if traced is None or traced.first_live is None:
        return None
    events = traced.events
    shapes: dict[str, tuple[int, ...]] = {}
    for record in traced.records:
        if record.output_shapes and record.tensor_output:  # a boundary's output is cached as one tensor
            shapes.setdefault(record.name, record.output_shapes[0][1:])
    ended = [(i, path) for i, (kind, path) in enumerate(events[: traced.first_live]) if kind == "end" and path]
    if not ended:
        return None
    end_index, boundary = ended[-1]
    stubbed = outermost({path for _, path in ended})
    # A stubbed module used again after the boundary (a shared activation) cannot be skipped.
    later = {path for kind, path in events[end_index + 1 :] if kind == "start"}
    if any(path == s or path.startswith(s + ".") for path in later for s in stubbed):
        return None
    if boundary not in shapes:
        return None
    order = [path for kind, path in events if kind == "start"]
    stubbed.sort(key=order.index)
    return Boundary(boundary, stubbed, shapes[boundary])


def outermost(done: set[str]) -> list[str]:
    """The finished modules with no finished ancestor at any level.

    A container such as a ModuleList never runs, so a block's parent may be missing while its
    grandparent is there.
    """
    return [p for p in done if not any(a in done for a in ancestors(p))]


def ancestors(path: str) -> list[str]:
    """``a``, ``a.b`` for ``a.b.c``: every enclosing module's path but the root's, outermost first."""
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def truncated(model: nn.Module, boundary: Boundary):
    """Within the block, ``model(activation)`` runs only what follows the boundary."""
    return swapped(model, {path: nn.Identity() for path in boundary.stubbed})


@torch.no_grad()
def iter_boundary_outputs(
    model: nn.Module, boundary: Boundary, batches: Iterable[torch.Tensor], *, prep, autocast
) -> Iterator[torch.Tensor]:
    """The boundary's output (float32, on the CPU) for each batch of ``batches``, the model in eval mode."""
    captured: list[torch.Tensor] = []
    module = model.get_submodule(boundary.path)
    handle = module.register_forward_hook(lambda m, a, out: captured.append(out.detach().float().cpu()))
    try:
        with module_modes(model):
            for images in batches:
                with autocast():
                    model(prep(images))
                yield captured.pop()
    finally:
        handle.remove()


def boundary_outputs(model: nn.Module, boundary: Boundary, batches, *, prep, autocast) -> torch.Tensor:
    """The boundary's output for every example of ``batches``, in one tensor."""
    return torch.cat(list(iter_boundary_outputs(model, boundary, batches, prep=prep, autocast=autocast)))


@torch.no_grad()
def fold_batchnorm(model: nn.Module, boundary: Boundary, images: torch.Tensor, *, prep) -> nn.Module | None:
    """A copy of ``model`` whose frozen prefix has each BatchNorm folded into the convolution before it.

    Only for computing the cache: in eval mode a BatchNorm is an affine map, so folding it into
    the convolution's weights removes a pass over every activation. Pairs are taken from the
    execution order (a Conv2d whose next module is a BatchNorm2d of its width); the copy is used
    only if it gives the same output as the model on ``images``, else None.
    """
    fused = copy.deepcopy(model).eval()
    prefix = set(boundary.stubbed)
    in_prefix = lambda path: any(path == p or path.startswith(p + ".") for p in prefix)  # noqa: E731
    events: list[tuple[str, str]] = []
    _, _, failure = trace(fused, tuple(images.shape[1:]), events=events)
    if failure is not None:
        return None
    modules = dict(fused.named_modules())
    # Layers in execution order; timm's BatchNormAct2d counts as one even though it has children.
    order = [
        path
        for kind, path in events
        if kind == "start" and (isinstance(modules[path], nn.BatchNorm2d) or not list(modules[path].children()))
    ]
    folded = 0
    for conv_path, bn_path in zip(order, order[1:]):
        conv, bn = modules[conv_path], modules[bn_path]
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        if not (in_prefix(conv_path) and in_prefix(bn_path)) or bn.num_features != conv.out_channels:
            continue
        if bn.running_mean is None or order.count(conv_path) != 1 or order.count(bn_path) != 1:
            continue
        put_module(fused, conv_path, fuse_conv_bn_eval(conv, bn))
        # timm's BatchNormAct2d also applies dropout and an activation after normalising.
        rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
        put_module(fused, bn_path, nn.Sequential(*rest) if rest else nn.Identity())
        folded += 1
    if not folded:
        return None
    with module_modes(model):  # BatchNorms after the boundary may be training: their statistics must not move
        reference = model(prep(images)).float()
    candidate = fused(prep(images)).float()
    scale = max(reference.abs().max().item(), 1e-12)
    return fused if (candidate - reference).abs().max().item() <= 1e-4 * scale else None


@torch.no_grad()
def check_boundary(model: nn.Module, boundary: Boundary, images: torch.Tensor, *, prep) -> float | None:
    """Largest difference between the full model and the truncated one on ``images``; None if it fails."""
    with module_modes(model):
        activation = boundary_outputs(model, boundary, [images], prep=prep, autocast=_no_autocast)
        full = model(prep(images)).float().cpu()
        device = next(model.parameters()).device
        with truncated(model, boundary):
            try:
                short = model(activation.to(device)).float().cpu()
            except Exception:  # the forward does more than chain modules
                return None
    return relative_difference(short, full)


def relative_difference(short: torch.Tensor, full: torch.Tensor) -> float | None:
    """A cut's largest difference from the full model's output, relative to its largest value; None if shapes differ."""
    if short.shape != full.shape:
        return None
    return (short - full).abs().max().item() / max(full.abs().max().item(), 1e-12)


@contextmanager
def _no_autocast():
    yield


def cache_key(model: nn.Module, boundary: Boundary, *, data_fingerprint: str, preprocessing: dict) -> str:
    """Changes when the frozen weights, the data files or the preprocessing change."""
    header = {"boundary": boundary.path, "data": data_fingerprint, "pre": preprocessing}
    tensors = (
        (f"{path}.{name}", tensor)
        for path in boundary.stubbed
        for name, tensor in sorted(model.get_submodule(path).state_dict().items())
    )
    return tensors_key(header, tensors)


def tensors_key(header: dict, tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A short hash of ``header`` (JSON) and every named tensor's bytes: the key of a stored cache."""
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True).encode())
    for name, tensor in tensors:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


_STORED_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def stored_activations(folder: Path, key: str, count: int) -> tuple[torch.Tensor, str] | None:
    """A stored cache for ``key``, or None when there is none or it does not look exactly as this module writes it.

    The folder may have come from someone else: its JSON picks neither another file, nor a
    type, nor a shape that does not match the file's size.
    """
    meta_path = folder / f"{key}.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        dtype = _STORED_DTYPES[meta["dtype"]]
        file = folder / f"{key}.{meta['dtype']}.bin"
        shape = [int(n) for n in meta["shape"]]
        expected = math.prod(shape) * dtype.itemsize
        if meta["file"] != file.name or shape[0] != count or min(shape) < 1 or file.stat().st_size != expected:
            return None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    mapped = torch.from_file(str(file), shared=False, size=math.prod(shape), dtype=dtype)
    return mapped.view(shape), f"{meta['dtype']}, reused from {file}"


def load_or_compute(
    compute: Callable[[], Iterable[torch.Tensor]],
    count: int,
    *,
    folder: Path,
    key: str,
    max_memory_bytes: int | None = None,
    reuse: bool = True,
    scratch: Path | None = None,
) -> tuple[torch.Tensor, str]:
    """The activations of ``count`` examples, stored batch by batch as ``compute()`` yields them.

    They are kept in fp16 when that is accurate to 1e-3 of their scale and nothing overflows;
    otherwise a second pass stores float32. They stay in memory when they fit in
    ``max_memory_bytes`` (a quarter of physical memory by default), else they are written to a
    memory-mapped file in ``folder`` named by ``key``, which later runs reuse: since the key covers
    the frozen weights, the data and the preprocessing, a stale file is never read. At no point
    is more than one batch held beside the store. Returns the tensor and how it is stored.

    ``reuse=False`` computes even when a stored file exists. With ``scratch`` (a process that does
    not write the run folder) nothing is kept: what memory cannot hold is mapped in a file there
    that is removed at once.
    """
    budget = memory_budget() if max_memory_bytes is None else max_memory_bytes
    reused = stored_activations(folder, key, count) if reuse else None
    if reused is not None:
        return reused
    for dtype in (torch.float16, torch.float32):
        stored = _store(compute(), count, dtype, folder=folder, key=key, budget=budget, scratch=scratch)
        if stored is not None:
            return stored
    raise AssertionError("float32 is always stored")


def rename_stored(folder: Path, key: str, new_key: str) -> None:
    """Move what :func:`load_or_compute` wrote to a file under ``key`` in this process to ``new_key``."""
    meta_path = folder / f"{key}.json"
    if not meta_path.is_file():
        return
    meta = json.loads(meta_path.read_text())
    file = folder / f"{new_key}.{meta['dtype']}.bin"
    os.replace(folder / meta["file"], file)  # a mapping of the file stays valid
    write_json(folder / f"{new_key}.json", {**meta, "file": file.name})
    meta_path.unlink()


def _store(
    batches: Iterable[torch.Tensor],
    count: int,
    dtype: torch.dtype,
    *,
    folder: Path,
    key: str,
    budget: int,
    scratch: Path | None,
) -> tuple[torch.Tensor, str] | None:
    """Write ``batches`` into a tensor of ``dtype``; None when fp16 loses more than the tolerance."""
    out, file, n = None, None, 0
    scale = error = 0.0
    name = str(dtype).removeprefix("torch.")
    for batch in batches:
        if out is None:
            shape = (count, *batch.shape[1:])
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes <= budget:
                out, where = torch.empty(shape, dtype=dtype), "in memory"
            elif scratch is not None:
                out, where = scratch_tensor(shape, dtype, scratch), "memory-mapped in a removed file"
            else:
                file = folder / f"{key}.{name}.bin"
                out, where = mapped_tensor(shape, dtype, file), f"memory-mapped at {file}"
        part = batch.to(dtype)
        out[n : n + len(batch)] = part
        n += len(batch)
        if dtype == torch.float16:
            scale = max(scale, batch.abs().max().item())
            error = max(error, (part.float() - batch).abs().max().item())
    if out is None or n != count:
        raise ValueError(f"expected activations for {count} examples, got {n}")
    if dtype == torch.float16 and not (scale < 60000 and error <= _FP16_TOLERANCE * max(scale, 1e-12)):
        if file is not None:
            file.unlink(missing_ok=True)
        return None
    if file is not None:  # marks it done
        write_json(folder / f"{key}.json", {"file": file.name, "dtype": name, "shape": list(out.shape)})
    return out, f"{name}, {out.numel() * out.element_size() / 2**20:.1f} MiB {where}"
