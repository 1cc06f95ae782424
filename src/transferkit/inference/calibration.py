"""Calibrated probabilities: one temperature, fitted on the held-out logits after training.

A network's softmax is usually over-confident after fine-tuning. Dividing the logits by a
temperature T fitted to minimise the held-out negative log-likelihood (Guo et al., 2017)
keeps every prediction (argmax is unchanged) and makes the probabilities mean what they say.
The fit is one scalar by LBFGS on log T; the run keeps it in ``calibration.json``, ``eval``
reports the expected calibration error before and after, ``predict`` uses it. A run of several
labels per image keeps one temperature per label there instead (:mod:`transferkit.tasks.calibration`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import RunError
from ..serialization import write_json

__all__ = ["CALIBRATION_FILE", "calibrate", "calibrate_labels", "fit_temperature", "read_temperature"]

CALIBRATION_FILE = "calibration.json"
# A temperature outside this range means a degenerate held-out set (one class, a handful of images).
_BOUNDS = (0.05, 20.0)
MIN_IMAGES = 20  # fewer held-out images fit noise, not calibration


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising the cross-entropy of ``logits / T`` against ``targets``.

    Example:
        >>> fit_temperature(torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 1, 1]))
        3.09...
    """
    logits, targets = logits.detach().double(), targets.detach()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(min(max(log_t.exp().item(), _BOUNDS[0]), _BOUNDS[1]))


def calibrate(run: str | Path, logits: torch.Tensor, targets: torch.Tensor, epoch: int, split: str, *, log) -> dict:
    from .report import calibration

    fitted = fit_temperature(logits, targets)
    reason = None
    if len(targets) < MIN_IMAGES:
        reason = f"only {len(targets)} held-out images (a temperature needs {MIN_IMAGES})"
    elif fitted in _BOUNDS:
        reason = f"the fit ran to the bound {fitted:g}: the held-out images are separated with no overlap to learn from"
    temperature = None if reason else fitted
    before = calibration(logits.softmax(-1), targets)["ece"]
    after = calibration((logits / (temperature or 1.0)).softmax(-1), targets)["ece"]
    result = {
        "temperature": temperature,
        "reason": reason,
        "epoch": epoch,  # the best checkpoint's: a later best needs its own fit
        "split": split,
        "images": len(targets),
        "ece_before": before,
        "ece_after": after,
        "nll_before": float(F.cross_entropy(logits, targets)),
        "nll_after": float(F.cross_entropy(logits / (temperature or 1.0), targets)),
    }
    write_json(Path(run) / CALIBRATION_FILE, result)
    if temperature is None:
        log(f"calibration: no temperature fitted, {reason}; probabilities stay the softmax of the logits")
    else:
        log(
            f"calibration: temperature {temperature:.3f} on {len(targets)} held-out images, "
            f"expected calibration error {before:.4f} -> {after:.4f}"
        )
    return result


def calibrate_labels(
    run: str | Path, logits: torch.Tensor, targets: torch.Tensor, epoch: int, split: str, names: list[str], *, log
) -> dict:
    """Fit one temperature per label on the held-out logits (N, K) of several labels and write ``calibration.json``."""
    from ..tasks.calibration import binary_ece, fit_label_temperatures, label_probabilities

    temperatures, unfitted = fit_label_temperatures(logits, targets)
    if len(targets) < MIN_IMAGES:
        why = f"only {len(targets)} held-out images (a temperature needs {MIN_IMAGES})"
        unfitted = dict.fromkeys(range(len(names)), why)
        temperatures = [1.0] * len(names)
    targets = targets.double()
    before, after = (label_probabilities(logits, t).double() for t in (None, temperatures))
    result = {
        "task": "multi-label",
        "temperatures": temperatures if len(unfitted) < len(names) else None,
        "labels": names,
        "unfitted": {names[k]: why for k, why in unfitted.items()},
        "epoch": epoch,
        "split": split,
        "images": len(targets),
        "ece_before": binary_ece(before, targets),
        "ece_after": binary_ece(after, targets),
        "nll_before": float(F.binary_cross_entropy(before, targets)),
        "nll_after": float(F.binary_cross_entropy(after, targets)),
    }
    write_json(Path(run) / CALIBRATION_FILE, result)
    fitted = len(names) - len(unfitted)
    kept = f"; {len(unfitted)} kept 1 ({', '.join(result['unfitted'])[:200]})" if unfitted else ""
    log(
        f"calibration: a temperature for {fitted} of {len(names)} labels on {len(targets)} held-out images{kept}; "
        f"expected calibration error {result['ece_before']:.4f} -> {result['ece_after']:.4f}"
    )
    return result


def read_temperature(run: str | Path, epoch: int | None = None) -> float | list[float] | None:
    """The run's fitted temperature (a list of one per label for several labels), or None when it has none or
    it was fitted for another epoch than ``epoch``.

    A damaged file is an error, never ignored.
    """
    path = Path(run) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(facts, dict) and facts.get("task") == "multi-label":
            return _label_temperatures(path, facts, epoch)
        value = facts.get("temperature")
    except (UnicodeDecodeError, ValueError, AttributeError):
        facts, value = {}, None
    if value is None and isinstance(facts, dict) and isinstance(facts.get("reason"), str):
        return None  # no temperature could be fitted (calibrate says why)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise RunError(f"'{path}' is damaged (no finite temperature); delete it to use uncalibrated probabilities.")
    if not _BOUNDS[0] <= value <= _BOUNDS[1]:
        raise RunError(f"'{path}' holds temperature {value}, outside {_BOUNDS}; delete it, or train again.")
    if epoch is not None and facts.get("epoch") != epoch:
        return None  # fitted for an earlier best checkpoint
    return float(value)


def _label_temperatures(path: Path, facts: dict, epoch: int | None) -> list[float] | None:
    values = facts.get("temperatures")
    if values is None or (epoch is not None and facts.get("epoch") != epoch):
        return None
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and _BOUNDS[0] <= v <= _BOUNDS[1] for v in values
    ):
        raise RunError(f"'{path}' is damaged (temperatures not numbers in {_BOUNDS}); delete it, or train again.")
    return [float(v) for v in values]
