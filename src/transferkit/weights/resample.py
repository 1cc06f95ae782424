"""Pretrained tables made for another input size, resampled to the model's by timm's own functions.

A ViT's position embeddings hold one vector per patch of the grid it was trained on; a Swin or
BEiT block's relative-position bias table one entry per offset within its window. A model built
for another size (:func:`transferkit.model.factory.create_model`'s ``image_size``) has tables of
another shape. timm's model modules each have a ``checkpoint_filter_fn`` that resamples them as
timm's own loader does (``resample_abs_pos_embed``, ``resize_rel_pos_bias_table`` and their
relatives); it is applied here to each shape-mismatched tensor alone, and its result is used only
when it has exactly the model's shape. Anything else stays a mismatch in the load report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

__all__ = ["resample_mismatched", "timm_filter"]


def timm_filter(model: nn.Module) -> Callable[[dict, nn.Module], dict] | None:
    """The ``checkpoint_filter_fn`` of the timm module that defines ``model``'s class, or None."""
    module_name = type(model).__module__
    if not module_name.startswith("timm.models."):
        return None
    return getattr(sys.modules.get(module_name), "checkpoint_filter_fn", None)


def resample_mismatched(
    model: nn.Module, keys: Mapping[str, str], tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple]
) -> dict[str, torch.Tensor]:
    """``{model key: resampled tensor}`` for the mismatched tensors timm's filter brings to the model's shape.

    Args:
        keys: ``{model key: checkpoint key}`` of the shape-mismatched tensors.
        shapes: the model's shape for each key.
    """
    filter_fn = timm_filter(model)
    if filter_fn is None:
        return {}
    out = {}
    for key, source in keys.items():
        try:
            with _quiet():
                result = filter_fn({key: tensors[source]}, model)
        except Exception:  # a filter written for whole checkpoints may not take one tensor: left mismatched
            continue
        value = result.get(key) if isinstance(result, Mapping) else None
        if isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(shapes[key]):
            out[key] = value
    return out


@contextlib.contextmanager
def _quiet():
    """timm's filters log each resampling; the load report says it once, with both shapes."""
    logger = logging.getLogger("timm")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
