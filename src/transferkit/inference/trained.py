"""A model ready for inference, with what it was trained with."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from ..data.preprocess import Preprocessing
from ..runtime.fastpath import FastPath
from ..tasks.objective import TargetScale
from ..tasks.targets import LabelSpec
from ..train.config import TrainConfig

__all__ = ["TrainedModel"]


@dataclass
class TrainedModel:
    """A fine-tuned model in eval mode with the preprocessing and class names it was trained with."""

    model: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]
    config: TrainConfig | None  # None for weights evaluated without a run
    fast: FastPath
    notes: list[str] = field(default_factory=list)
    named_classes: bool = True  # False when the class names are only output indices
    temperature: float | list[float] | None = None  # divides the logits (one per label) for calibrated probabilities
    epoch: int | None = None  # the checkpoint's epoch
    validated: dict | None = None  # how training validated this checkpoint: its history row and kernels
    task: str = "classification"  # or multi-label, regression (transferkit.tasks)
    thresholds: list[float] | None = None  # multi-label: per label, the probability above which it applies
    target_scale: TargetScale | None = None  # regression: the output's units
    interval: dict | None = None  # regression: the split-conformal interval (transferkit.tasks.conformal)
    label_spec: LabelSpec | None = None  # where a CSV holds the labels this model predicts (None: classes)
