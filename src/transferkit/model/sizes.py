"""Input sizes: build a model for the size it will see, and refuse a size it cannot take.

Convolutional networks take any size their strides leave room for. Transformers fix some
things at construction: a ViT's position embeddings cover one grid of patches, a LeViT's
attention biases one resolution. timm builds each at a given size through its own ``img_size``
argument; pretrained tables made for another size are resampled when they load
(:mod:`transferkit.weights.resample`). Whether a size works is found by running it: a dry run
at the size, and when it fails, the nearby sizes (multiples of the network's total stride) that
do, so that the refusal names sizes the user can use.

A size whose batch cannot be held in memory is refused before anything is built or decoded,
from a lower bound: the batch's float32 input, and once the dry run has run, the largest layer
input plus output it saw, in half precision. A network needs at least that at once, so the
refusal is never wrong; the bound is not a promise that a batch below it fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn as nn

from .._storage import physical_memory
from .._text import human_bytes, one_line
from ..errors import ModelSpecError
from ._trace import trace

__all__ = ["check_batch_memory", "check_input_size", "default_size", "total_stride"]

_PEAK = "transferkit_peak_activation"  # (elements per image, layer path) of the largest layer seen in the dry run


def default_size(model: nn.Module) -> int | None:
    """The side in pixels of the size the architecture was defined at (timm's pretrained config), or None."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return int(cfg["input_size"][-1])
    size = getattr(model, "transferkit_input_size", None)
    return int(size[-1]) if size is not None else None


def total_stride(model: nn.Module) -> int:
    """How much the network shrinks its input by the last stage: timm's feature_info, its patch size, else 32."""
    info = getattr(model, "feature_info", None)
    reductions = []
    for entry in info or []:
        if isinstance(entry, dict) and isinstance(entry.get("reduction"), int):
            reductions.append(entry["reduction"])
    if reductions:
        return max(reductions)
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch:
        return int(patch[0] if isinstance(patch, tuple | list) else patch)
    return 32


def _runs_at(model: nn.Module, channels: int, size: int) -> Exception | None:
    _, records, failure = trace(model, (channels, size, size))
    if failure is None and records:
        # records end children first: reversed, a tie goes to the outermost module
        peak = max(reversed(records), key=lambda r: sum(map(math.prod, r.input_shapes + r.output_shapes)))
        setattr(model, _PEAK, (sum(map(math.prod, peak.input_shapes + peak.output_shapes)), peak.name))
    return None if failure is None else failure.error


def check_batch_memory(
    size: int,
    *,
    batch: int,
    channels: int = 3,
    model: nn.Module | None = None,
    memory: int | None = None,
    where: str = "this machine",
) -> None:
    """Refuse a batch that cannot be held in ``memory`` bytes (default: this machine's), before it is made.

    The bound is the batch's float32 input; with ``model`` after its dry run at ``size``
    (:func:`check_input_size`), also its largest layer's input and output in half precision.

    Examples:
        >>> check_batch_memory(100_000, batch=64)
        Traceback (most recent call last):
        ModelSpecError: One batch of 64 images at 100000 px needs at least 7.0 TiB (its float32 input) ...
    """
    memory = physical_memory() if memory is None else memory
    if not memory:
        return
    needed, what = batch * channels * size * size * 4, "its float32 input"
    peak = getattr(model, _PEAK, None) if model is not None else None
    if peak is not None and batch * peak[0] * 2 > needed:
        needed, what = batch * peak[0] * 2, f"the input and output of '{peak[1] or 'the model'}' in half precision"
    if needed <= memory:
        return
    images = "one image" if batch == 1 else f"one batch of {batch} images"
    raise ModelSpecError(
        f"{images.capitalize()} at {size} px needs at least {human_bytes(needed)} ({what}), and {where} "
        f"has {human_bytes(memory)} of memory; choose a smaller image_size"
        + ("" if batch == 1 else " or batch_size")
        + ".",
        argument="image_size" if batch == 1 else ("image_size", "batch_size"),
    )


def check_input_size(
    model: nn.Module,
    spec: str,
    size: int,
    *,
    build: Callable[[int], nn.Module],
    channels: int = 3,
) -> None:
    """Raise :class:`ModelSpecError` naming sizes that work when ``model`` (built for ``size``) cannot run at it.

    Args:
        build: makes the same architecture for another size, to try the candidates.

    Examples:
        >>> check_input_size(levit, "levit_128s", 100, build=lambda s: create_model("levit_128s", image_size=s))
        Traceback (most recent call last):
        ModelSpecError: levit_128s cannot take 100 px input (...); sizes that work: 96, 128 (multiples of 32) ...
    """
    error = _runs_at(model, channels, size)
    if error is None:
        return
    stride = total_stride(model)
    below = max(stride, size // stride * stride)
    candidates = sorted({below - stride, below, below + stride, below + 2 * stride} - {size})
    working = []
    for candidate in candidates:
        if candidate < stride or len(working) >= 3:
            continue
        try:
            other = build(candidate)
        except Exception:  # the candidate is not a size this architecture can be built for
            continue
        if _runs_at(other, channels, candidate) is None:
            working.append(candidate)
    default = default_size(model)
    sizes = ", ".join(str(s) for s in working) if working else "none near it"
    own = f"; its own size is {default} px" if default else ""
    raise ModelSpecError(
        f"{spec} cannot take {size} px input ({type(error).__name__}: {one_line(error, 160)}); "
        f"sizes that work near it: {sizes} (multiples of its stride {stride}){own}. Choose one with --image-size.",
        argument="image_size",
    )
