"""The optimizers made for a model, remembered weakly, so that surgery after one was made can say that it
misses the new layers (a layer replaced after the optimizer was made never trains)."""

from __future__ import annotations

import warnings
import weakref

import torch.nn as nn

__all__ = ["track_optimizer", "warn_stale_optimizers"]

# The optimizers create_optimizer made for each model, weakly: surgery warns when one no longer holds every
# trainable parameter (a layer replaced after the optimizer was made never trains).
_OPTIMIZERS: weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet] = weakref.WeakKeyDictionary()


def track_optimizer(model: nn.Module, optimizer) -> None:
    """Remember that ``optimizer`` was made for ``model``'s trainable parameters (see :func:`set_module`)."""
    _OPTIMIZERS.setdefault(model, weakref.WeakSet()).add(optimizer)


def warn_stale_optimizers(model: nn.Module, what: str) -> None:
    """Warn for each optimizer made for ``model`` that misses a trainable parameter after ``what``."""
    for optimizer in list(_OPTIMIZERS.get(model, ())):
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in held]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            warnings.warn(
                f"{what}: the optimizer made before it does not hold {shown}, which would not train; "
                "make it again: create_optimizer(model, ...).",
                stacklevel=3,
            )
