"""Calibrated probabilities for several labels per image: one temperature per label.

Each label's sigmoid is a binary classifier of its own, over-confident or under-confident in its
own way after fine-tuning, so each gets its own temperature T_k, fitted on the held-out logits to
minimise that label's binary cross-entropy (temperature scaling, Guo et al. 2017, per label).
Dividing a logit by T_k > 0 keeps every ranking, so average precision does not change, and the
run's thresholds move with it (:func:`calibrated_thresholds`): every decision stays as it was.
A label with too few held-out images on either side keeps T = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "MIN_EACH_SIDE",
    "binary_ece",
    "calibrated_thresholds",
    "fit_label_temperatures",
    "label_probabilities",
    "reliability",
]

MIN_EACH_SIDE = 5  # held-out images with and without a label that its temperature needs
BOUNDS = (0.05, 20.0)  # as for classes: a fit at a bound means separated images, nothing to learn from
ECE_BINS = 15


def fit_temperature_values(
    loss: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...] = (), *, max_iter: int = 100
) -> torch.Tensor:
    """The temperature(s) T of ``shape`` minimising ``loss(T)``: LBFGS on log T from T = 1, clamped to
    :data:`BOUNDS`. The one fit behind a run's temperature for classes and its per-label ones.

    Examples:
        >>> logits, targets = torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 0])
        >>> float(fit_temperature_values(lambda t: F.cross_entropy(logits / t, targets)))
        20.0
    """
    log_t = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = loss(log_t.exp())
        value.backward()
        return value

    optimizer.step(closure)
    return log_t.detach().exp().clamp(*BOUNDS)


def fit_label_temperatures(logits: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], dict[int, str]]:
    """Per label, the temperature minimising the binary cross-entropy of ``logits[:, k] / T``, and why any kept 1.

    Examples:
        >>> logits = torch.tensor([[4.0], [4.0], [-4.0], [-4.0]] * 5)  # half of the confident positives are wrong
        >>> fit_label_temperatures(logits, torch.tensor([[1], [0], [0], [0]] * 5))
        ([3.64...], {})
    """
    logits, targets = logits.detach().double(), targets.detach().double()

    def loss(t: torch.Tensor) -> torch.Tensor:
        # the labels' losses are separate sums: one joint fit is each label's own fit
        return F.binary_cross_entropy_with_logits(logits / t, targets, reduction="none").mean(0).sum()

    fitted = fit_temperature_values(loss, (logits.shape[1],), max_iter=200).tolist()
    positives = targets.sum(0)
    temperatures, unfitted = [], {}
    for k, t in enumerate(fitted):
        with_it, without = int(positives[k]), len(targets) - int(positives[k])
        if min(with_it, without) < MIN_EACH_SIDE:
            unfitted[k] = f"{with_it} held-out images with it and {without} without (each side needs {MIN_EACH_SIDE})"
        elif t <= BOUNDS[0] * 1.0001 or t >= BOUNDS[1] * 0.9999:
            unfitted[k] = f"the fit ran to the bound {t:.3g}: its held-out images are separated with no overlap"
        temperatures.append(1.0 if k in unfitted else float(t))
    return temperatures, unfitted


def label_probabilities(logits: torch.Tensor, temperatures: list[float] | None) -> torch.Tensor:
    """(N, K) probabilities of each label: the sigmoid of the logits, each divided by its temperature."""
    logits = logits.float()
    if temperatures is None:
        return torch.sigmoid(logits)
    return torch.sigmoid(logits / torch.tensor(temperatures, dtype=logits.dtype, device=logits.device))


def calibrated_thresholds(thresholds: list[float], temperatures: list[float] | None) -> list[float]:
    """The run's thresholds (on uncalibrated probabilities) as the same decisions on calibrated ones.

    Examples:
        >>> calibrated_thresholds([0.5, 0.8], [2.0, 2.0])  # 0.8 = sigmoid(1.386), now sigmoid(0.693)
        [0.5, 0.666...]
    """
    if temperatures is None:
        return list(thresholds)
    moved = []
    for t, temperature in zip(thresholds, temperatures):
        t = min(max(t, 1e-7), 1 - 1e-7)
        moved.append(1 / (1 + math.exp(-math.log(t / (1 - t)) / temperature)))
    return moved


def binary_ece(probabilities: torch.Tensor, targets: torch.Tensor, *, bins: int = ECE_BINS) -> float:
    """Expected calibration error of every (image, label) probability against whether the label applies.

    In each of ``bins`` equal-width bins of probability, the gap between the mean probability and
    the share of labels that apply, weighted by the bin's share of all decisions.

    Examples:
        >>> binary_ece(torch.tensor([[0.9], [0.9], [0.2]]), torch.tensor([[1], [0], [0]]))
        0.333...
    """
    p, y = probabilities.double().flatten(), targets.double().flatten()
    which = (p * bins).long().clamp(max=bins - 1)
    gaps = 0.0
    for b in which.unique().tolist():
        inside = which == b
        gaps += float(inside.sum()) * abs(float(p[inside].mean()) - float(y[inside].mean()))
    return gaps / len(p)


def reliability(probabilities: torch.Tensor, targets: torch.Tensor, *, bins: int = ECE_BINS) -> dict:
    """Expected calibration error over ``bins`` equal-width confidence bins, and the bins themselves.

    Examples:
        >>> reliability(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]))["ece"]
        0.35
    """
    confidence, predicted = probabilities.max(-1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    rows, ece = [], 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        n = int(inside.sum())
        if n:
            acc, conf = correct[inside].mean().item(), confidence[inside].double().mean().item()
            ece += n / len(targets) * abs(acc - conf)
            rows.append({"low": low.item(), "high": high.item(), "count": n, "accuracy": acc, "confidence": conf})
    return {"ece": ece, "bins": rows}
