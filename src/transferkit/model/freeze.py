"""Freeze and unfreeze parameters by module path, glob, regex or depth, with an explicit BatchNorm policy.

Patterns select parameter names:

* a module path or parameter name: ``features`` selects ``features.0.weight`` and the rest;
* a glob: ``layer1.*``, ``*.bn*``;
* a regular expression after ``re:``: ``re:^layer[12]\\.``.

Frozen BatchNorm layers are kept in eval mode (running statistics fixed) even after a later
``model.train()``, unless ``train_bn=True`` asks for them to keep training, as in Lightning's
``BaseFinetuning.freeze``. So are the Dropout and DropPath layers of a module whose parameters
are all frozen: a frozen block is a fixed function of its input, whose output can be computed
once and cached, rather than a source of noise that differs every epoch.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch.nn as nn
from timm.models import group_modules, group_parameters

from .._table import Table
from ..errors import FreezeError
from ._trace import NORM_TYPES, is_random
from .surgery import find_head

__all__ = [
    "ModuleCount",
    "freeze",
    "freeze_backbone",
    "freeze_stages",
    "frozen_norm_layers",
    "held_layers",
    "hold_norm_statistics",
    "parameter_summary",
    "select_parameters",
    "stage_parameters",
    "stages",
    "trainable_parameters",
    "unfreeze",
]

# Norm layers held in eval mode, and the hook that holds them; weak so that dropping the
# model frees them.
_EVAL_HOOKS: weakref.WeakKeyDictionary[nn.Module, object] = weakref.WeakKeyDictionary()


@dataclass
class ModuleCount:
    """Trainable and frozen parameter elements of one top-level module."""

    module: str
    trainable: int
    frozen: int

    def to_dict(self) -> dict:
        return asdict(self)


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.startswith(pattern + ".")


def select_parameters(model: nn.Module, patterns: str | Iterable[str]) -> list[str]:
    """Names of the parameters that any of ``patterns`` selects, in definition order.

    Raises :class:`FreezeError` naming a pattern that selects nothing, so a typo cannot
    silently freeze nothing.

    Examples:
        >>> select_parameters(torchvision.models.alexnet(), ["features"])[:2]
        ['features.0.weight', 'features.0.bias']
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as e:
                raise FreezeError(f"Pattern '{pattern}' is not a valid regular expression: {e}.") from None
        if not any(_matches(n, pattern) for n in names):
            tops = sorted({n.split(".", 1)[0] for n in names})
            raise FreezeError(
                f"Pattern '{pattern}' selects no parameter of {type(model).__name__}. "
                f"Top-level modules: {', '.join(tops)}."
            )
    return [n for n in names if any(_matches(n, p) for p in patterns)]


def _set_requires_grad(model: nn.Module, names: Iterable[str], value: bool) -> None:
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(value)


def _keep_eval(module: nn.Module, args) -> None:
    # Runs before every forward: a frozen norm layer computes with its running statistics and
    # never updates them, whatever model.train() set.
    module.training = False


def _hold_eval(module: nn.Module) -> None:
    if module not in _EVAL_HOOKS:
        _EVAL_HOOKS[module] = module.register_forward_pre_hook(_keep_eval)
    module.eval()


def _release_eval(module: nn.Module, training: bool) -> None:
    handle = _EVAL_HOOKS.pop(module, None)
    if handle is not None:
        handle.remove()
        module.train(training)


def _apply_mode_policy(model: nn.Module, selected: set[str], train_bn: bool) -> None:
    for path, module in model.named_modules():
        if is_random(module) and _parent_frozen(model, path):
            _hold_eval(module)
        if not isinstance(module, NORM_TYPES):
            continue
        own = [f"{path}.{n}" if path else n for n, _ in module.named_parameters(recurse=False)]
        if own and not all(n in selected for n in own):
            continue
        if not own and not _covers_path(model, path, selected):
            continue
        if train_bn:
            _set_requires_grad(model, own, True)
            _release_eval(module, model.training)
        else:
            _hold_eval(module)


def _parent_frozen(model: nn.Module, path: str) -> bool:
    # Dropout or DropPath inside a module that has parameters, none of them trainable.
    parent = model.get_submodule(path.rpartition(".")[0])
    params = list(parent.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def _covers_path(model: nn.Module, path: str, selected: set[str]) -> bool:
    # A norm layer without affine parameters is frozen with the module around it: its parent
    # has parameters and all of them are selected.
    parent = path.rpartition(".")[0]
    siblings = [n for n, _ in model.named_parameters() if parent == "" or n.startswith(parent + ".")]
    return bool(siblings) and all(n in selected for n in siblings)


def freeze(model: nn.Module, patterns: str | Iterable[str], *, train_bn: bool = False) -> list[str]:
    """Freeze the parameters that ``patterns`` select; returns their names.

    Args:
        patterns: module paths, globs or ``re:`` regexes (see the module docstring).
        train_bn: keep the selected BatchNorm layers training (parameters and running
            statistics). By default they are frozen and held in eval mode.

    Examples:
        >>> model = torchvision.models.alexnet(num_classes=10)
        >>> _ = freeze(model, "features")
        >>> [n for n, p in model.named_parameters() if p.requires_grad][:2]
        ['classifier.1.weight', 'classifier.1.bias']
    """
    names = select_parameters(model, patterns)
    _set_requires_grad(model, names, False)
    _apply_mode_policy(model, set(names), train_bn)
    return names


def unfreeze(model: nn.Module, patterns: str | Iterable[str] = "*") -> list[str]:
    """Make the selected parameters trainable again and release their norm layers to train mode."""
    names = select_parameters(model, patterns)
    _set_requires_grad(model, names, True)
    selected = set(names)
    for path, module in model.named_modules():
        if module in _EVAL_HOOKS and is_random(module):
            if not _parent_frozen(model, path):
                _release_eval(module, model.training)
        elif module in _EVAL_HOOKS:
            own = [f"{path}.{n}" if path else n for n, _ in module.named_parameters(recurse=False)]
            if (own and all(n in selected for n in own)) or (not own and _covers_path(model, path, selected)):
                _release_eval(module, model.training)
    return names


def hold_norm_statistics(model: nn.Module) -> list[str]:
    """Hold every BatchNorm layer in eval mode (running statistics fixed), whatever of it trains; returns their paths.

    For BitFit on a CNN: the biases of the BatchNorm layers train while their statistics stay
    the pretrained ones, as when the layers are frozen. :func:`unfreeze` of all their parameters
    releases them.
    """
    held = []
    for path, module in model.named_modules():
        if isinstance(module, NORM_TYPES) and module.track_running_stats:
            _hold_eval(module)
            held.append(path)
    return held


def frozen_norm_layers(model: nn.Module) -> list[str]:
    """Paths of the norm layers held in eval mode."""
    return [path for path, module in model.named_modules() if module in _EVAL_HOOKS and isinstance(module, NORM_TYPES)]


def held_layers(model: nn.Module) -> list[str]:
    """Paths of every layer held in eval mode: frozen norm layers, and the Dropout and DropPath of frozen modules."""
    return [path for path, module in model.named_modules() if module in _EVAL_HOOKS]


def freeze_backbone(model: nn.Module, *, head: str | None = None, train_bn: bool = False) -> list[str]:
    """Freeze everything but the head (found with :func:`find_head` unless given)."""
    head = head or find_head(model)
    names = [n for n, _ in model.named_parameters() if not _matches(n, head)]
    if not names:
        return []
    return freeze(model, names, train_bn=train_bn)


def stages(model: nn.Module) -> list[list[str]]:
    """The model's stages, from input to output, as lists of module paths.

    timm models describe their own (stem, each block stage, head); for other models each
    top-level child with parameters is a stage (``conv1``, ``bn1``, ``layer1`` ... ``fc``).
    """
    if hasattr(model, "group_matcher"):
        groups = group_modules(model, model.group_matcher(coarse=True))
        return [list(modules) for _, modules in sorted(groups.items())]
    return [[name] for name, child in model.named_children() if any(True for _ in child.parameters())]


def stage_parameters(model: nn.Module) -> list[list[str]]:
    """The parameter names of each stage, from input to output; every parameter in exactly one.

    timm models group their parameters themselves (``group_matcher(coarse=True)``): each block
    of a ViT, each stage of a CNN or a Swin; parameters that belong to no module, such as a
    ViT's ``cls_token`` and ``pos_embed``, go with the stem, where timm puts them. Other models
    have a stage per top-level child, and their own parameters join the first stage.

    Examples:
        >>> stage_parameters(timm.create_model("vit_tiny_patch16_224"))[0][:2]
        ['cls_token', 'pos_embed']
    """
    names = [n for n, _ in model.named_parameters()]
    if hasattr(model, "group_matcher"):
        groups = group_parameters(model, model.group_matcher(coarse=True))
        grouped = [list(params) for _, params in sorted(groups.items())]
    else:
        grouped = [[n for n in names if n.startswith(path + ".")] for path, *_ in stages(model)]
        own = [n for n in names if "." not in n]
        if own and grouped:
            grouped[0] = own + grouped[0]
    grouped = [g for g in grouped if g]
    placed = {n for g in grouped for n in g}
    left = [n for n in names if n not in placed]
    if left:  # names no group matched join the last stage, as in timm's own grouping
        grouped[-1].extend(left)
    return grouped


def freeze_stages(
    model: nn.Module, *, keep_last: int, train_bn: bool = False, argument: str = "keep_last"
) -> list[str]:
    """Freeze all stages but the last ``keep_last`` (the head counts as a stage; see :func:`stage_parameters`).

    Keeping every stage freezes nothing, and a :class:`UserWarning` says so. ``argument``: the name errors and
    warnings give ``keep_last`` (a caller's own setting, such as ``unfreeze_last``).
    """
    all_stages = stage_parameters(model)
    if keep_last < 1 or keep_last > len(all_stages):
        raise FreezeError(
            f"{argument} must be between 1 and {len(all_stages)} (the model's stages: transformer blocks for "
            f"ViTs, stages for CNNs and hierarchical transformers), got {keep_last}.",
            argument=argument,
        )
    frozen = [name for stage in all_stages[: len(all_stages) - keep_last] for name in stage]
    if not frozen:
        warnings.warn(
            f"{argument}={keep_last} keeps all {len(all_stages)} stages of the model trainable: it freezes nothing.",
            stacklevel=2,
        )
        return []
    return freeze(model, frozen, train_bn=train_bn)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs that require gradients; each shared parameter once."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def parameter_summary(model: nn.Module) -> Table:
    """Trainable and frozen parameter elements per top-level module; each shared parameter once.

    A list of :class:`ModuleCount` that prints as a table (``.to_pandas()`` for a DataFrame).
    """
    counts: dict[str, ModuleCount] = {}
    for name, param in model.named_parameters():
        top = name.split(".", 1)[0]
        entry = counts.setdefault(top, ModuleCount(top, 0, 0))
        if param.requires_grad:
            entry.trainable += param.numel()
        else:
            entry.frozen += param.numel()
    return Table(counts.values(), title=f"parameters of {type(model).__name__} by top-level module")
