"""The fine-tuning strategies as phases: which parameters train, at which learning rates, for how long.

* ``full``: initialise from all pretrained weights and train everything.
* ``freeze``: freeze the feature extractor and train only the new head (a linear probe).
* ``head``: train the head and what ``freeze`` / ``unfreeze_last`` leave trainable.
* ``gradual``: the head first, then everything (fastai's ``fine_tune``); discriminative
  learning rates (ULMFiT) with ``layer_decay``.
* ``lp-ft``: a linear probe, then full fine-tuning from the probed head at a lower rate
  (Kumar et al., ICLR 2022).
* ``scratch``: the same architecture from random initialisation: what pretraining buys.
* ``lora`` / ``dora``: peft's low-rank adapters beside the attention and MLP layers (the
  convolutions of a CNN), the head fully; the rest stays frozen (:mod:`transferkit.adapters`).
* ``bitfit``: the biases and the head; BatchNorm statistics stay the pretrained ones unless ``train_bn``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError, FreezeError

if TYPE_CHECKING:  # the phases are planned without torch: the configuration validates with them
    import torch.nn as nn

__all__ = ["ADAPTER_STRATEGIES", "STRATEGIES", "Phase", "apply_phase", "plan_phases"]

STRATEGIES = ("full", "freeze", "head", "gradual", "lp-ft", "scratch", "lora", "dora", "bitfit")
ADAPTER_STRATEGIES = ("lora", "dora")


@dataclass
class Phase:
    """A stretch of training with one set of trainable parameters and one schedule."""

    name: str
    epochs: int
    # "all", "head", "custom" (the freeze patterns / unfreeze_last of the config), "adapters" or "bitfit"
    trains: str
    lr: float
    layer_decay: float | None = None  # discriminative rates: each earlier stage * this

    def to_dict(self) -> dict:
        return asdict(self)


# Learning rates that work without tuning for AdamW with warmup and cosine decay: a new linear
# head on frozen features learns fastest at a high rate (1e-2 beat 3e-3 by 1 point on
# EfficientNet-Lite0 features of MNIST at 80 and 96 px); pretrained layers want a lower one;
# from scratch needs more.
_HEAD_LR = 1e-2
_FINETUNE_LR = 1e-3
_SCRATCH_LR = 2e-3
# Adapters and biases start at zero change and move little per step: a higher rate than full
# fine-tuning, as in the LoRA and BitFit papers (1e-3 to 5e-3 with AdamW).
_ADAPTER_LR = 3e-3


def plan_phases(
    strategy: str,
    epochs: int,
    *,
    lr: float | None = None,
    layer_decay: float | None = None,
    freeze_patterns: list[str] | None = None,
    unfreeze_last: int | None = None,
) -> list[Phase]:
    """The phases of ``strategy`` over ``epochs`` epochs.

    ``lr`` overrides the main rate; ``layer_decay`` gives discriminative rates to every phase that
    trains all layers (none by default).

    Examples:
        >>> [(p.name, p.epochs, p.trains) for p in plan_phases("gradual", 4)]
        [('head', 1, 'head'), ('unfrozen', 3, 'all')]
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"Unknown strategy '{strategy}'. Choose one of: {', '.join(STRATEGIES)}.", argument="strategy"
        )
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}.", argument="epochs")

    def rate(default: float) -> float:
        return default if lr is None else lr

    if strategy == "full":
        return [Phase("full", epochs, "all", rate(_FINETUNE_LR), layer_decay)]
    if strategy == "scratch":
        return [Phase("scratch", epochs, "all", rate(_SCRATCH_LR), layer_decay)]
    if strategy == "freeze":
        return [Phase("probe", epochs, "head", rate(_HEAD_LR))]
    if strategy in ADAPTER_STRATEGIES:
        return [Phase(strategy, epochs, "adapters", rate(_ADAPTER_LR))]
    if strategy == "bitfit":
        return [Phase("bitfit", epochs, "bitfit", rate(_ADAPTER_LR))]
    if strategy == "head":
        _check_custom(freeze_patterns, unfreeze_last)
        return [Phase("head", epochs, "custom", rate(_FINETUNE_LR))]
    if epochs < 2:
        raise ConfigError(
            f"epochs must be at least 2 for strategy '{strategy}', which has two phases; got {epochs}.",
            argument="epochs",
        )
    if strategy == "gradual":
        first = max(1, math.ceil(epochs / 4))
        # Every layer at the same rate once unfrozen, unless layer_decay asks otherwise: lite0 on
        # mnist5k at 64 px (3 epochs) reached 91.4% with timm's layer decay 0.85 a block (the stem
        # at 0.063 of the head's rate) against 96.8% without; images far from the source need
        # their early layers to move (BENCHMARKS.md, "Demo targets").
        return [
            Phase("head", first, "head", _HEAD_LR),
            Phase("unfrozen", epochs - first, "all", rate(_FINETUNE_LR), layer_decay),
        ]
    # lp-ft: half the epochs probing, then everything at a tenth of the probe's rate, so the
    # features are not distorted by a random head's large gradients.
    first = max(1, epochs // 2)
    probe = rate(_HEAD_LR)
    return [Phase("probe", first, "head", probe), Phase("finetune", epochs - first, "all", probe / 10, layer_decay)]


def apply_phase(
    model: nn.Module,
    phase: Phase,
    *,
    head: str,
    freeze_patterns: list[str] | None = None,
    unfreeze_last: int | None = None,
    train_bn: bool = False,
    bitfit_norms: bool = False,
) -> None:
    """Set which parameters train for ``phase``; frozen BatchNorm stays in eval mode."""
    from ..model.freeze import freeze, freeze_backbone, freeze_stages, hold_norm_statistics, unfreeze

    unfreeze(model, "*")
    if phase.trains in ("adapters", "bitfit"):
        from ..adapters import adapter_parameters, bitfit_parameters

        if phase.trains == "adapters":
            trains = set(adapter_parameters(model))
        else:
            trains = set(bitfit_parameters(model, head, norms=bitfit_norms))
        rest = [n for n, _ in model.named_parameters() if n not in trains]
        if rest:
            freeze(model, rest, train_bn=train_bn)
        if phase.trains == "bitfit" and not train_bn:
            hold_norm_statistics(model)  # BatchNorm biases train; the statistics stay the pretrained ones
    elif phase.trains == "head":
        freeze_backbone(model, head=head, train_bn=train_bn)
    elif phase.trains == "custom":
        _check_custom(freeze_patterns, unfreeze_last)
        if freeze_patterns:
            freeze(model, freeze_patterns, train_bn=train_bn)
        if unfreeze_last is not None:
            freeze_stages(model, keep_last=unfreeze_last, train_bn=train_bn, argument="unfreeze_last")
        if any(n.startswith(head + ".") and not p.requires_grad for n, p in model.named_parameters()):
            raise FreezeError(f"The freeze patterns freeze the new head '{head}'; it must train.")


def _check_custom(freeze_patterns: list[str] | None, unfreeze_last: int | None) -> None:
    if not freeze_patterns and unfreeze_last is None:
        raise ConfigError("Strategy 'head' needs freeze patterns or unfreeze_last.", argument="freeze")
