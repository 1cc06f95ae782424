"""What a strategy would train, phase by phase, without data or training: ``transferkit plan --strategy``.

Each phase's parameters are set as ``train`` sets them (:func:`~transferkit.train.phases.phase.apply_configured_phase`,
with lora's and dora's adapters added first) and handed to the optimizer ``train`` would build, so
what is shown is what a run of that strategy gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .._table import Table
from ..model.freeze import ModuleCount, frozen_norm_layers, parameter_summary
from ..model.surgery import find_head
from .config import TrainConfig
from .phases.phase import apply_configured_phase, phase_optimizer
from .setup import attach_adapters

__all__ = ["PhasePlan", "plan_strategy"]


@dataclass
class PhasePlan:
    """One phase: its name, epochs and rate, what trains per top-level module, the optimizer's groups."""

    name: str
    epochs: int
    lr: float
    modules: list[ModuleCount]
    groups: list[dict]  # lr, weight_decay, params (names)
    frozen_norms: list[str]

    @property
    def trainable(self) -> int:
        return sum(m.trainable for m in self.modules)

    @property
    def frozen(self) -> int:
        return sum(m.frozen for m in self.modules)

    def to_dict(self) -> dict:
        return {
            "phase": self.name,
            "epochs": self.epochs,
            "lr": self.lr,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "modules": [m.to_dict() for m in self.modules],
            "optimizer_groups": self.groups,
            "frozen_norm_layers": self.frozen_norms,
        }

    def __repr__(self) -> str:
        tensors = sum(len(g["params"]) for g in self.groups)
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return (
            f"PhasePlan({self.name!r}, {epochs} at lr {self.lr:g}: {self.trainable:,} parameters train, "
            f"{self.frozen:,} frozen; the optimizer gets {tensors} tensors in {len(self.groups)} groups)"
        )


def plan_strategy(model: nn.Module, config: TrainConfig) -> Table:
    """The phases of ``config.strategy`` on ``model`` (changed in place: adapters added, the last phase's freezing):
    a list of :class:`PhasePlan` that prints as a table of what each phase trains.

    ``config`` supplies what ``train`` would: epochs, rates, freeze patterns, the optimizer, lora's settings.

    Examples:
        >>> [p.name for p in plan_strategy(create_model("resnet18", num_classes=10), TrainConfig(
        ...     model="resnet18", data="photos/", out="runs/plan", strategy="lp-ft", epochs=4))]
        ['probe', 'finetune']
    """
    model = attach_adapters(model, config)
    head = find_head(model)
    plans = []
    for phase in config.phases():
        apply_configured_phase(model, config, phase, head)
        optimizer = phase_optimizer(model, config, phase)
        groups = [
            {"lr": g["lr"], "weight_decay": g["weight_decay"], "params": list(g["param_names"])}
            for g in optimizer.param_groups
        ]
        plans.append(
            PhasePlan(
                phase.name,
                phase.epochs,
                phase.lr,
                parameter_summary(model),
                groups,
                frozen_norm_layers(model),
            )
        )
    return Table(plans, title=f"strategy {config.strategy} on {type(model).__name__}", shown=_plan_row)


def _plan_row(plan: PhasePlan) -> dict:
    trains = [m.module for m in plan.modules if m.trainable]
    return {
        "phase": plan.name,
        "epochs": plan.epochs,
        "lr": plan.lr,
        "trainable": plan.trainable,
        "frozen": plan.frozen,
        "training modules": ", ".join(trains) if len(trains) <= 4 else f"{', '.join(trains[:3])} ... {trains[-1]}",
        "optimizer": f"{sum(len(g['params']) for g in plan.groups)} tensors in {len(plan.groups)} groups",
        "frozen norms": len(plan.frozen_norms),
    }
