"""Calibrated probabilities: one temperature, fitted on the held-out logits after training.

A network's softmax is usually over-confident after fine-tuning. Dividing the logits by a
temperature T fitted to minimise the held-out negative log-likelihood (Guo et al., 2017)
keeps every prediction (argmax is unchanged) and makes the probabilities mean what they say.
The fit is one scalar by LBFGS on log T.

A temperature is kept only where it helps images it was not fitted on: the held-out images are
split in two halves (stratified by class, seeded), each half is calibrated by the temperature
fitted on the other, and the expected calibration error of these cross-fitted probabilities must
be lower than that of the softmax. The run keeps the temperature fitted on all of them in
``calibration.json`` (or, where it would not help, why none is kept); ``eval``, its report page and
``predict`` all use it, and say so. A run of several labels per image keeps one temperature per
label there instead (:mod:`transferkit.tasks.calibration`), each checked the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import RunError
from ...serialization import write_json
from ...tasks.calibration import BOUNDS, fit_temperature_values, reliability

__all__ = [
    "CALIBRATION_FILE",
    "calibrate",
    "calibrate_labels",
    "fit_temperature",
    "held_out_halves",
    "probability_kind",
    "read_temperature",
]

CALIBRATION_FILE = "calibration.json"
MIN_IMAGES = 20  # fewer held-out images fit noise, not calibration


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising the cross-entropy of ``logits / T`` against ``targets``.

    Examples:
        >>> fit_temperature(torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 1, 1]))
        5.77...
    """
    logits, targets = logits.detach().double(), targets.detach()
    return float(fit_temperature_values(lambda t: F.cross_entropy(logits / t, targets)))


def held_out_halves(strata: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two halves of the held-out images, each stratum (class) dealt alternately between them, seeded.

    Examples:
        >>> a, b = held_out_halves(torch.tensor([0, 0, 1, 1, 1, 1]))
        >>> sorted(len(x) for x in (a, b))
        [3, 3]
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(strata), generator=generator)
    order = order[torch.sort(strata[order], stable=True).indices]  # shuffled within each stratum
    return order[0::2], order[1::2]


def _cross_fitted(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The held-out logits, each half divided by the temperature fitted on the other half."""
    a, b = held_out_halves(targets)
    crossed = logits.clone()
    crossed[a] = logits[a] / fit_temperature(logits[b], targets[b])
    crossed[b] = logits[b] / fit_temperature(logits[a], targets[a])
    return crossed


def calibrate(run: str | Path, logits: torch.Tensor, targets: torch.Tensor, epoch: int, split: str, *, log) -> dict:
    """Fit ``run``'s temperature on the held-out logits, keep it only where it lowers the cross-fitted expected
    calibration error, and write ``calibration.json``."""
    logits = logits.float()
    fitted = fit_temperature(logits, targets)
    crossed = _cross_fitted(logits, targets)
    before = reliability(logits.softmax(-1), targets)["ece"]
    after = reliability(crossed.softmax(-1), targets)["ece"]
    reason = None
    if len(targets) < MIN_IMAGES:
        reason = f"only {len(targets)} held-out images (a temperature needs {MIN_IMAGES})"
    elif fitted in BOUNDS:
        reason = f"the fit ran to the bound {fitted:g}: the held-out images are separated with no overlap to learn from"
    elif after >= before:
        reason = (
            f"it would not lower the expected calibration error of images it was not fitted on ({before:.4f} -> "
            f"{after:.4f}, each half of the held-out images calibrated by the other's fit)"
        )
    temperature = None if reason else fitted
    result = {
        "temperature": temperature,
        "fitted": fitted,
        "reason": reason,
        "epoch": epoch,  # the best checkpoint's: a later best needs its own fit
        "split": split,
        "images": len(targets),
        "check": "two halves, each calibrated by the temperature fitted on the other",
        "ece_before": before,
        "ece_after": after if temperature else before,
        "ece_cross_fitted": after,
        "nll_before": float(F.cross_entropy(logits, targets)),
        "nll_after": float(F.cross_entropy(crossed if temperature else logits, targets)),
    }
    write_json(Path(run) / CALIBRATION_FILE, result)
    if temperature is None:
        log(f"calibration: no temperature kept: {reason}; probabilities stay the softmax of the logits")
    else:
        log(
            f"calibration: temperature {temperature:.3f} kept: on {len(targets)} held-out images, each half "
            f"calibrated by the other's fit, expected calibration error {before:.4f} -> {after:.4f}"
        )
    return result


def calibrate_labels(
    run: str | Path, logits: torch.Tensor, targets: torch.Tensor, epoch: int, split: str, names: list[str], *, log
) -> dict:
    """Fit one temperature per label on the held-out logits (N, K) of several labels and write ``calibration.json``."""
    from ...tasks.calibration import binary_ece, fit_label_temperatures, label_probabilities

    temperatures, unfitted = fit_label_temperatures(logits, targets)
    # Each half calibrated by the other's fit; a label keeps its temperature only where that lowers its error.
    a, b = held_out_halves(targets.float().argmax(1) + targets.sum(1) * targets.shape[1])  # by labels and count
    crossed = logits.float().clone()
    crossed[a] = logits[a].float() / torch.tensor(fit_label_temperatures(logits[b], targets[b])[0])
    crossed[b] = logits[b].float() / torch.tensor(fit_label_temperatures(logits[a], targets[a])[0])
    raw, checked = label_probabilities(logits, None).double(), torch.sigmoid(crossed).double()
    for k in range(len(names)):
        own_before, own_after = (binary_ece(p[:, k : k + 1], targets[:, k : k + 1]) for p in (raw, checked))
        if k not in unfitted and own_after >= own_before:
            unfitted[k] = (
                f"it would not lower its error on images it was not fitted on ({own_before:.4f} -> {own_after:.4f})"
            )
    temperatures = [1.0 if k in unfitted else t for k, t in enumerate(temperatures)]
    if len(targets) < MIN_IMAGES:
        why = f"only {len(targets)} held-out images (a temperature needs {MIN_IMAGES})"
        unfitted = dict.fromkeys(range(len(names)), why)
        temperatures = [1.0] * len(names)
    targets = targets.double()
    kept = torch.tensor([k not in unfitted for k in range(len(names))])
    before, after = raw, torch.where(kept, checked, raw)  # held out: the kept labels cross-fitted
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
        "check": "two halves, each calibrated by the temperatures fitted on the other",
    }
    write_json(Path(run) / CALIBRATION_FILE, result)
    fitted = len(names) - len(unfitted)
    kept = f"; {len(unfitted)} kept 1 ({', '.join(result['unfitted'])[:200]})" if unfitted else ""
    log(
        f"calibration: a temperature kept for {fitted} of {len(names)} labels on {len(targets)} held-out images"
        f"{kept}; expected calibration error, each half calibrated by the other's fit, "
        f"{result['ece_before']:.4f} -> {result['ece_after']:.4f}"
    )
    return result


def probability_kind(temperature: float | list[float] | None, *, asked_raw: bool = False) -> str:
    """Which probabilities a run's outputs are given as, in the words ``predict`` and the report page both use.

    Examples:
        >>> probability_kind(1.4321)
        "calibrated: the softmax of the logits divided by the run's temperature 1.432"
    """
    if asked_raw:
        return "uncalibrated, as asked: the softmax of the logits (each label's sigmoid for several labels)"
    if temperature is None:
        return "uncalibrated: the softmax of the logits (the run keeps no temperature)"
    if isinstance(temperature, list):
        return "calibrated: each label's sigmoid of its logit divided by the run's temperature for it"
    return f"calibrated: the softmax of the logits divided by the run's temperature {temperature:.3f}"


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
    if not BOUNDS[0] <= value <= BOUNDS[1]:
        raise RunError(f"'{path}' holds temperature {value}, outside {BOUNDS}; delete it, or train again.")
    if epoch is not None and facts.get("epoch") != epoch:
        return None  # fitted for an earlier best checkpoint
    return float(value)


def _label_temperatures(path: Path, facts: dict, epoch: int | None) -> list[float] | None:
    values = facts.get("temperatures")
    if values is None or (epoch is not None and facts.get("epoch") != epoch):
        return None
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and BOUNDS[0] <= v <= BOUNDS[1] for v in values
    ):
        raise RunError(f"'{path}' is damaged (temperatures not numbers in {BOUNDS}); delete it, or train again.")
    return [float(v) for v in values]
