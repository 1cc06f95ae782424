"""The head's input through timm's own cut, for networks whose modules do not run in sequence.

A ViT adds its class token and position embeddings, and pools its tokens, outside any module;
a Swin or MaxViT reshapes between stages. The dry-run boundary of
:mod:`transferkit.train.cache.feature_cache` cannot skip such a prefix. timm's models say themselves
where their features end: ``forward_features`` then ``forward_head(x, pre_logits=True)`` give
exactly what the classifier sees. When only the classifier trains and nothing before it is
random or updating, that vector is computed once per image and the classifier alone trains on it.
A check on real images confirms ``classifier(pre_logits)`` equals the model's output first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn as nn

from ...model._trace import module_modes
from ...model.freeze import held_layers
from .feature_cache import Boundary, is_live, relative_difference, tensors_key

__all__ = ["PRE_LOGITS", "check_pre_logits", "head_cut_key", "iter_pre_logits", "pre_logits_boundary"]

# The Boundary path that names this cut in logs and cache keys.
PRE_LOGITS = "forward_head(pre_logits=True)"


def _pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


@torch.no_grad()
def pre_logits_boundary(model: nn.Module, head: str, images: torch.Tensor, *, prep) -> Boundary | None:
    """The cut at the classifier's input, with the shape of what it holds; None when the model has no timm feature
    API, when anything outside ``head`` trains or is random in training, or when the pre-logits do not run."""
    if not (callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))):
        return None
    prefix = head + "."
    if any(p.requires_grad for n, p in model.named_parameters() if not n.startswith(prefix)):
        return None
    held = set(held_layers(model))
    if any(is_live(path, m, held) for path, m in model.named_modules() if path != head and not path.startswith(prefix)):
        return None
    with module_modes(model):
        try:
            features = _pre_logits(model, prep(images[:1]))
        except Exception:  # a forward_head without pre_logits
            return None
    stubbed = [name for name, _ in model.named_children() if name != head.split(".")[0]]
    return Boundary(PRE_LOGITS, stubbed, tuple(features.shape[1:]))


@torch.no_grad()
def check_pre_logits(model: nn.Module, head: str, images: torch.Tensor, *, prep) -> float | None:
    """Largest relative difference between the model and its classifier on the pre-logits on ``images``; None if the
    classifier is not one module that takes them."""
    classifier = model.get_submodule(head)
    with module_modes(model):
        x = prep(images)
        try:
            short = classifier(_pre_logits(model, x)).float()
        except Exception:  # a head that is not one module
            return None
        full = model(x).float()
    return relative_difference(short, full)


@torch.no_grad()
def iter_pre_logits(model: nn.Module, batches: Iterable[torch.Tensor], *, prep, autocast) -> Iterator[torch.Tensor]:
    """The classifier's input (float32, on the CPU) for each batch, the model in eval mode."""
    with module_modes(model):
        for images in batches:
            with autocast():
                yield _pre_logits(model, prep(images)).float().cpu()


def head_cut_key(model: nn.Module, head: str, *, data_fingerprint: str, preprocessing: dict) -> str:
    """Changes with any tensor outside the head (``cls_token`` too), the data or the preprocessing."""
    header = {"cut": PRE_LOGITS, "data": data_fingerprint, "pre": preprocessing}
    prefix = head + "."
    return tensors_key(header, ((n, t) for n, t in model.state_dict().items() if not n.startswith(prefix)))
