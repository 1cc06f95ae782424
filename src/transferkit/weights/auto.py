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

__all__ = ["AutoWeights", "default_weights"]


@dataclass(frozen=True)
class AutoWeights:
    """The weights found for a MODEL (None where it has none) and, in words, where they come from or why none."""

    spec: str | None
    why: str

    def __str__(self) -> str:
        return f"{self.spec} ({self.why})" if self.spec else self.why


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
