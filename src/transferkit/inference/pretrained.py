"""A classifier straight from weights (a checkpoint file, registry name or hub spec), with no run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from ..data.preprocess import Preprocessing
from ..errors import WeightsError
from ..model.factory import create_model
from ..model.surgery import find_head
from ..runtime.fastpath import resolve_device
from ..weights.loading import LoadPolicy, load_pretrained
from ..weights.preprocessing import resolve_preprocessing
from ..weights.registry import class_names_for, get_weights, list_weights

__all__ = ["PretrainedModel", "load_weights_model"]


@dataclass
class PretrainedModel:
    """A model in eval mode with the preprocessing its weights expect and its class names."""

    model: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]
    named_classes: bool  # False when the names are only output indices ("0", "1", ...)
    architecture: str
    notes: list[str] = field(default_factory=list)


def load_weights_model(source: str, *, model: str | None = None, device: str = "auto") -> PretrainedModel:
    """Build the network ``source``'s weights are for and load them, head included.

    Args:
        source: registry weights (``lite0``), a checkpoint file, or a hub spec (``timm:a1_in1k``,
            ``hf-hub:ORG/REPO``, ``torchvision:IMAGENET1K_V1``, a URL).
        model: the MODEL to build. For registry weights, the record's by default; for a file,
            the architecture it fits by names (``transferkit identify``) when that is one
            network; hub specs need it. The head gets the file's class count.

    Examples:
        >>> loaded = load_weights_model("resnet18-finetuned.pth")
        >>> loaded.architecture, len(loaded.class_names)
        ('resnet18', 7)
    """
    notes: list[str] = []
    records = {record.name for record in list_weights()}
    if model is None:
        if source in records:
            model = get_weights(source).architecture
        else:
            model = _identified(source, notes)
    net = create_model(model)
    dry = load_pretrained(net, source, policy=LoadPolicy(min_loaded=0.99, dry_run=True, allow_partial=True))
    classes = dry.head_classes
    if classes is not None and classes != _num_outputs(net):
        net = create_model(model, num_classes=classes)
    report = load_pretrained(net, source, policy=LoadPolicy(min_loaded=0.99))
    left = report.missing + [m.key for m in report.mismatched]
    if left:  # a random layer would predict nothing
        raise WeightsError(
            f"'{source}' does not fill {model}: {len(left)} tensors missing or of another shape "
            f"(first: {left[0]}). Use the architecture the file was saved from ('transferkit identify FILE')."
        )
    net.to(resolve_device(device)).eval()
    pre = resolve_preprocessing(net, source)[0]
    if source in records:
        names, named = get_weights(source).class_names(), True
    else:
        names = class_names_for(net)
        named = names is not None
        names = names or [str(i) for i in range(_num_outputs(net))]
    return PretrainedModel(net, pre, names, named, model, notes)


def _identified(source: str, notes: list[str]) -> str:
    """The one architecture a checkpoint file fits by names; refused when none or several that compute differently."""
    from ..weights.identify import compare_outputs, identify

    if not Path(source).exists() and ("/" in source or Path(source).suffix in (".pt", ".pth", ".bin", ".onnx")):
        raise WeightsError(f"'{source}' does not exist: give a run folder, an exported .onnx or a checkpoint file.")
    if not Path(source).is_file():
        raise WeightsError(f"Weights '{source}' need model: the MODEL they are for (--model on the command line).")
    found = identify(source)
    if found.native is None:
        fits = ", ".join(c.model for c in found.by_structure[:3])
        also = f" It fits {fits} by structure only." if fits else ""
        raise WeightsError(
            f"'{source}' fits no timm or torchvision architecture by names; give model, a MODEL (--model on the "
            f"command line).{also}"
        )
    if found.by_names and found.by_names[0].num_classes is None:
        raise WeightsError(f"'{source}' has no classification head ({found.native} without one): it cannot classify.")
    fits = [c.model for c in found.by_names] or [found.native]
    if len(fits) > 1:
        built = []
        for name in fits[:4]:
            net = create_model(name, num_classes=found.by_names[0].num_classes)
            load_pretrained(net, source)
            built.append(net.eval())
        pre = Preprocessing.from_model(built[0])
        differ = [n for n, net in zip(fits[1:], built[1:]) if not compare_outputs(built[0], net, pre)["identical"]]
        if differ:
            raise WeightsError(
                f"'{source}' fits {fits[0]} and {', '.join(differ)} by names, and they compute differently; "
                "give --model MODEL."
            )
    notes.append(f"built {fits[0]}, the architecture '{source}' fits by names (transferkit identify)")
    return fits[0]


def _num_outputs(net: nn.Module) -> int:
    head = net.get_submodule(find_head(net))
    return getattr(head, "out_features", None) or getattr(head, "out_channels", 0)
