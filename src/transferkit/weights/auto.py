"""What ``weights="auto"`` gives a MODEL name: the pretrained weights it has, found without downloading.

In order:

1. a registry record that reproduces the architecture exactly and is installed (works offline);
2. ``torchvision:DEFAULT`` for ``torchvision:NAME`` models that have weights;
3. timm's pretrained tag: the one the name carries (``resnet50.a1_in1k``), else timm's default.

Fetching them is :func:`transferkit.weights.hub.fetch`'s, through the hubs' own caches. A transformers
model brings its own weights, and a factory of the user's makes what it makes: neither is looked up here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..errors import ModelSpecError
from ..model.factory import create_model as build

__all__ = ["AutoWeights", "create_model", "default_weights"]


@dataclass(frozen=True)
class AutoWeights:
    """The weights found for a MODEL (None where it has none) and, in words, where they come from or why none."""

    spec: str | None
    why: str

    def __str__(self) -> str:
        return f"{self.spec} ({self.why})" if self.spec else self.why


def create_model(
    spec: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    image_size: int | None = None,
    drop_path: float = 0.0,
    pretrained: bool | str = False,
    offline: bool | None = None,
) -> nn.Module:
    """Build the model that ``spec`` names: with random weights, or ``pretrained`` ones.

    Args:
        spec: the MODEL string (:mod:`transferkit.model.factory`).
        num_classes: a head for this many classes.
        in_chans: input channels (1 for grayscale); RGB weights adapt the first convolution as timm's
            ``adapt_input_conv`` does.
        image_size: the side in pixels of the images the model will see.
        drop_path: stochastic depth, timm's ``drop_path_rate`` (timm models only).
        pretrained: True loads the weights MODEL has (as ``--weights auto`` finds them: an installed
            registry record, timm's pretrained tag, torchvision's DEFAULT, a transformers repo's own);
            a string names them (``lite0``, ``timm:TAG``, ``hf-hub:ORG/REPO``, a file). What loaded is in
            ``model.transferkit_load_report`` (a :class:`~transferkit.weights.loading.LoadReport`).
        offline: with ``pretrained``, True downloads nothing (the caches only); default as
            ``HF_HUB_OFFLINE`` says.

    The building is :func:`transferkit.model.factory.create_model`'s, which says more of each argument.

    Examples:
        >>> model = create_model("torchvision:alexnet", num_classes=10)
        >>> model.classifier[6].out_features
        10
    """
    model = build(spec, num_classes=num_classes, in_chans=in_chans, image_size=image_size, drop_path=drop_path)
    return _with_weights(model, spec.removeprefix("timm:"), pretrained, offline) if pretrained else model


def _with_weights(model: nn.Module, spec: str, pretrained: bool | str, offline: bool | None) -> nn.Module:
    """``model`` with the pretrained weights ``pretrained`` names (True: those MODEL has), the report kept on it."""
    from .loading import load_pretrained

    weights = pretrained if isinstance(pretrained, str) else getattr(model, "transferkit_weights", None)
    if weights is None:
        found = default_weights(spec)
        if found.spec is None:
            raise ModelSpecError(
                f"pretrained: {spec} has no pretrained weights ({found.why}); name them: pretrained='timm:TAG', "
                "'hf-hub:ORG/REPO', 'torchvision:ENUM', a URL or a file.",
                argument="pretrained",
            )
        weights = found.spec
    model.transferkit_load_report = load_pretrained(model, weights, offline=offline)
    return model


def default_weights(model: str) -> AutoWeights:
    """The pretrained weights ``model`` has; nothing is downloaded.

    Examples:
        >>> default_weights("resnet18")
        AutoWeights(spec='timm:a1_in1k', why="timm's default pretrained tag for resnet18")
        >>> default_weights("botnet50ts_256").spec is None
        True
    """
    from .registry import list_weights

    for record in list_weights():
        if record.architecture == model and record.is_installed():
            return AutoWeights(record.name, f"the {record.name} record, installed with {record.package}")
    if model.startswith("torchvision:"):
        return _torchvision(model.split(":", 1)[1])
    return _timm(model)


def _torchvision(name: str) -> AutoWeights:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return AutoWeights(None, f"torchvision has nothing pretrained for {name}")
    return AutoWeights("torchvision:DEFAULT", f"torchvision's default for {name}: {enum.DEFAULT.name}")


def _timm(model: str) -> AutoWeights:
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(model):
        return AutoWeights(None, f"{model} is not a timm model")
    try:
        cfg = get_pretrained_cfg(model)
    except RuntimeError:  # timm's word for a tag the architecture does not have
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return AutoWeights(None, f"timm has nothing pretrained for {model}")
    tagged = "." in model
    which = f"the tag {model} names" if tagged else f"timm's default pretrained tag for {model}"
    return AutoWeights(f"timm:{cfg.tag}" if cfg.tag else "timm", which)
