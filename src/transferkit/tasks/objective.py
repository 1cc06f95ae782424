"""Each task's training loss, from the model's raw outputs (logits) and the decoded targets.

Multi-label trains binary cross-entropy on one logit per label (``pos_weight`` under
``--balance weighted``: negatives over positives per label, as torch documents it). Regression
trains on targets standardised by the training set's mean and scale (:class:`TargetScale`), so
that one learning rate serves a target in millimetres or in years; the model's output is in
standardised units and :meth:`TargetScale.restore` brings it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["TargetScale", "loss_function", "positive_weights"]


@dataclass(frozen=True)
class TargetScale:
    """The training targets' mean and standard deviation: the model predicts ``(y - mean) / std``."""

    mean: float
    std: float

    @classmethod
    def of(cls, targets: torch.Tensor) -> TargetScale:
        std = float(targets.double().std()) if len(targets) > 1 else 1.0
        return cls(float(targets.double().mean()), std if std > 1e-12 else 1.0)

    def standardise(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets - self.mean) / self.std

    def restore(self, outputs: torch.Tensor) -> torch.Tensor:
        """Standardised outputs (N,) or (N, 1) as values in the target's units (N,)."""
        return outputs.reshape(len(outputs), -1)[:, 0].float() * self.std + self.mean


def positive_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per label, negatives over positives of the (N, K) 0/1 training targets (a label with none counts one)."""
    positives = targets.sum(0)
    return (len(targets) - positives) / positives.clamp(min=1)


def loss_function(
    task: str,
    *,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    pos_weight: torch.Tensor | None = None,
    scale: TargetScale | None = None,
    regression_loss: str = "mse",
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(logits, targets)``, the mean over the batch, for ``task``."""
    if task == "multi-label":
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y.float(), pos_weight=pos_weight)
    if task == "regression":
        scale = scale or TargetScale(0.0, 1.0)
        measure = F.huber_loss if regression_loss == "huber" else F.mse_loss

        def regression(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return measure(logits.reshape(len(logits), -1)[:, 0].float(), scale.standardise(y.float()))

        return regression
    return lambda logits, y: F.cross_entropy(logits, y, weight=class_weights, label_smoothing=label_smoothing)
