"""What the weights see: the one resolution of a model's preprocessing, for training, prediction and export.

Policy, first match wins:

1. weights that bring their own configuration: a registry record (``lite0``), a timm tag, a
   ``hf-hub:`` repo's ``config.json``, a torchvision enum;
2. the model's own configuration as timm reads it (``resolve_model_data_config``): a timm model's
   ``pretrained_cfg``, a transformers model's image processor (read into the same keys when the model is
   built), timm's defaults for any other network.

The input size is the one asked for (``image_size``), else the configuration's (H, W); the channels are the
model's first convolution's.
"""

from __future__ import annotations

from dataclasses import replace

import torch.nn as nn

from ..data.preprocess import EvalTransform, Preprocessing, input_size_of
from .registry import weights_preprocessing

__all__ = ["eval_transform", "resolve_preprocessing"]


def resolve_preprocessing(
    model: nn.Module,
    weights: str | None = None,
    *,
    image_size: int | None = None,
) -> tuple[Preprocessing, str]:
    """The preprocessing ``model`` (with ``weights`` loaded into it) expects, and where it came from, for the log.

    Examples:
        >>> import timm
        >>> pre, source = resolve_preprocessing(timm.create_model("resnet18"))
        >>> pre.input_size, pre.interpolation, source
        ((3, 224, 224), 'bicubic', "the model's own configuration")
    """
    if weights:
        brought, source = weights_preprocessing(weights, model)
    else:
        brought, source = None, "the model's own configuration"
    base = brought or Preprocessing.from_model(model)
    size = (image_size, image_size) if image_size else tuple(base.input_size[1:])
    return replace(base, input_size=(input_size_of(model)[0], *size)), source


def eval_transform(
    model: nn.Module,
    *,
    weights: str | None = None,
    image_size: int | None = None,
) -> EvalTransform:
    """A callable that turns an image (PIL, (C, H, W) uint8 tensor or (H, W, C) uint8 array) into the normalised
    float tensor ``model`` is fed, exactly as transferkit's training, evaluation and prediction prepare it, and
    equal to timm's ``create_transform(**resolve_model_data_config(model))`` for timm models.

    Args:
        model: the network, a timm, torchvision, transformers (as MODEL builds it) or your own ``nn.Module``;
            a run's ``TrainedModel`` or ``Predictor`` gives its recorded preprocessing.
        weights: weights that bring their own preprocessing (``lite0``, ``timm:TAG``, ``hf-hub:ORG/REPO``,
            ``torchvision:ENUM``).
        image_size: the input size the model was built for, when not its configuration's.

    Examples:
        >>> import timm, torch
        >>> t = eval_transform(timm.create_model("resnet18"))
        >>> t(torch.zeros(3, 300, 400, dtype=torch.uint8)).shape
        torch.Size([3, 224, 224])
    """
    recorded = getattr(model, "preprocessing", None)
    if isinstance(recorded, Preprocessing) and not isinstance(model, nn.Module):
        return EvalTransform(recorded)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, a TrainedModel or a Predictor; got {type(model).__name__}.")
    return EvalTransform(resolve_preprocessing(model, weights, image_size=image_size)[0])
