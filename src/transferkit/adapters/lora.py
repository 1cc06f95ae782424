"""LoRA and DoRA through the peft library, on any network: timm, torchvision or the user's own.

peft's ``get_peft_model`` wraps the chosen layers in place: each keeps its pretrained weight
frozen (``base_layer``) and gains a low-rank update ``B @ A`` (``lora_A``/``lora_B``), with DoRA's
magnitude vector when ``use_dora``. The head is one of peft's ``modules_to_save``: it trains fully,
and peft saves it with the adapter, so that ``PeftModel.from_pretrained(base, folder)`` rebuilds the
fine-tuned classifier with peft alone.

Defaults per family: a transformer's attention (``qkv``, ``proj`` and their split forms) and MLP
(``fc1``, ``fc2``) linears; a network without them gets its ordinary (ungrouped) convolutions.
"""

from __future__ import annotations

import shutil
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch.nn as nn

from ..errors import ConfigError
from ..model.freeze import _matches

__all__ = [
    "ADAPTER_FOLDER",
    "LoraSettings",
    "adapter_parameters",
    "default_targets",
    "copy_model",
    "inject_lora",
    "merged",
    "peft_model_of",
    "save_adapter",
]

ADAPTER_FOLDER = "adapter"  # in a run folder: adapter_config.json + adapter_model.safetensors, peft's format

# The last name of attention and MLP projections across timm's transformer families (ViT, DeiT,
# BEiT, EVA, Swin, MaxViT's attention, ...).
_TRANSFORMER_LINEARS = frozenset(
    ("qkv", "q", "k", "v", "kv", "q_proj", "k_proj", "v_proj", "proj", "fc1", "fc2", "fc1_g", "fc1_x")
)

# The PeftModel that wraps each adapted network; weak so that dropping the network frees it.
_PEFT: weakref.WeakKeyDictionary[nn.Module, object] = weakref.WeakKeyDictionary()


@dataclass
class LoraSettings:
    """What ``inject_lora`` adds: rank, scale (alpha / rank), dropout, target layers and DoRA."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=list)  # module paths, globs or re:; empty: the family's defaults
    dora: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def default_targets(model: nn.Module, head: str) -> list[str]:
    """The layers LoRA adapts by default: attention and MLP linears, else ungrouped convolutions (head excluded).

    Examples:
        >>> default_targets(timm.create_model("vit_tiny_patch16_224"), "head")[:2]
        ['blocks.0.attn.qkv', 'blocks.0.attn.proj']
    """

    def outside_head(path: str) -> bool:
        return path != head and not path.startswith(head + ".")

    linears = [
        path
        for path, module in model.named_modules()
        if isinstance(module, nn.Linear) and path.rsplit(".", 1)[-1] in _TRANSFORMER_LINEARS and outside_head(path)
    ]
    if linears:
        return linears
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.groups == 1 and outside_head(path)
    ]


def _selected_targets(model: nn.Module, head: str, patterns: list[str]) -> list[str]:
    if not patterns:
        found = default_targets(model, head)
        if not found:
            raise ConfigError(
                f"{type(model).__name__} has no attention or MLP linear layers and no ungrouped convolutions "
                "for LoRA; name the layers with lora_targets.",
                argument="lora_targets",
            )
        return found
    layers = [
        path for path, module in model.named_modules() if path and isinstance(module, nn.Linear | nn.Conv2d | nn.Conv1d)
    ]
    chosen = []
    for pattern in patterns:
        hits = [path for path in layers if _matches(path, pattern) or _matches(path, pattern + ".*")]
        hits = [path for path in hits if path != head]
        if not hits:
            raise ConfigError(
                f"lora_targets pattern '{pattern}' selects no Linear or Conv layer outside the head "
                f"(first layers: {', '.join(layers[:4])}).",
                argument="lora_targets",
            )
        chosen += [path for path in hits if path not in chosen]
    return chosen


def inject_lora(model: nn.Module, head: str, settings: LoraSettings) -> nn.Module:
    """Add peft's LoRA (or DoRA) adapters to ``model`` in place; returns ``model``.

    Every parameter but the adapters and the head is frozen by peft. The PeftModel wrapping
    ``model`` is kept for :func:`save_adapter` and :func:`merged` (:func:`peft_model_of`).
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError(
            "LoRA and DoRA need the peft library: pip install 'transferkit[peft]'.", argument="strategy"
        ) from None
    if settings.rank < 1:
        raise ConfigError(f"lora_rank must be at least 1, got {settings.rank}.", argument="lora_rank")
    targets = _selected_targets(model, head, settings.targets)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=[head],
        use_dora=settings.dora,
    )
    _PEFT[model] = get_peft_model(model, config)
    _expose_geometry(model)
    return model


_CONV_GEOMETRY = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


def _expose_geometry(model: nn.Module) -> None:
    """Give each of peft's wrapped convolutions its convolution's geometry as plain attributes.

    Code around a convolution may read it: transformers' TF-style "SAME" padding (MobileNet V1 and V2)
    reads ``stride``, ``kernel_size`` and ``dilation`` of the layer it pads for, which peft's wrapper does
    not forward to the layer it wraps.
    """
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module is not base:
            for name in _CONV_GEOMETRY:
                if name not in module.__dict__ and not hasattr(type(module), name):
                    setattr(module, name, getattr(base, name))


def peft_model_of(model: nn.Module):
    """The PeftModel around ``model``, or None when it has no adapters."""
    return _PEFT.get(model)


def adapter_parameters(model: nn.Module) -> list[str]:
    """Names of what trains under LoRA: the adapters' tensors and the head's trainable copy."""
    return [n for n, _ in model.named_parameters() if ".lora_" in n or ".modules_to_save." in n]


def save_adapter(model: nn.Module, folder: str | Path, *, base: dict) -> Path:
    """Write the adapters and the head in peft's format into ``folder``; ``base`` (what they adapt) to base.json."""
    from ..serialization import write_json

    peft_model = peft_model_of(model)
    if peft_model is None:
        raise ValueError("This model has no peft adapters to save.")
    folder = Path(folder)
    # Written beside and renamed into place: an interrupted save never leaves half an adapter.
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    peft_model.save_pretrained(str(partial))
    write_json(partial / "base.json", base)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that keeps its adapters: its own PeftModel wraps the copy."""
    import copy

    peft_model = peft_model_of(model)
    if peft_model is None:
        return copy.deepcopy(model)
    twin = copy.deepcopy(peft_model)
    network = twin.base_model.model
    _PEFT[network] = twin
    return network


def merged(model: nn.Module) -> nn.Module:
    """The network with each adapter folded into its layer's weight (peft's ``merge_and_unload``)."""
    peft_model = peft_model_of(model)
    if peft_model is None:
        return model
    return peft_model.merge_and_unload()
