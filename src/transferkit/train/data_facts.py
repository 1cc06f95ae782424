"""What a run's data is like, said in its log and kept in its report: images per class (or label) in each split,
the targets' statistics, and the warnings they call for (imbalanced classes, rare labels)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.decode import Decoded
from ..tasks.objective import TargetScale
from ..tasks.scores import imbalance
from .config import IMBALANCED

__all__ = ["RARE_LABEL", "split_facts", "target_stats"]

RARE_LABEL = 20  # a label on fewer than 1 in this many training images is warned about


def split_facts(
    task: str, class_names: list[str], train: Decoded, val: Decoded, *, log: Callable[[str], None] = print
) -> tuple[dict, dict | None, TargetScale | None]:
    """Images per class (or label) in each split, logged with the warnings they call for; for numbers, each split's
    target distribution and the training targets' scale."""
    parts = (("train", train), ("val", val))
    stats, scale = None, None
    if task == "classification":
        counts = {
            name: dict(zip(class_names, torch.bincount(part.labels, minlength=len(class_names)).tolist()))
            for name, part in parts
        }
        for name, per_class in counts.items():
            log(f"{name} images per class: " + ", ".join(f"{c} {n}" for c, n in per_class.items()))
    elif task == "multi-label":
        counts = {name: dict(zip(class_names, part.labels.sum(0).long().tolist())) for name, part in parts}
        for name, part in parts:
            log(
                f"{name} images per label (with it, of {len(part.labels)}): "
                + ", ".join(f"{c} {n}" for c, n in counts[name].items())
            )
        rare = [c for c, n in counts["train"].items() if n * RARE_LABEL < len(train.labels)]
        if rare:
            log(
                f"warning: labels on fewer than 1 in {RARE_LABEL} training images: {', '.join(rare)}; "
                "their average precision rests on few images (--balance weighted weighs their positives up)"
            )
    else:
        counts = {"train": {}, "val": {}}
        stats = {name: target_stats(part.labels) for name, part in parts}
        scale = TargetScale.of(train.labels)
        for name, values in stats.items():
            log(f"{name} {class_names[0]}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    ratio = imbalance(list(counts["train"].values())) if task == "classification" else 1.0
    if ratio > IMBALANCED:
        largest = max(counts["train"], key=counts["train"].get)
        smallest = min(counts["train"], key=counts["train"].get)
        log(
            f"warning: imbalanced classes: '{largest}' has {ratio:.1f}x the training images of '{smallest}'; "
            "accuracy hides a classifier that ignores small classes: read balanced accuracy and macro-F1"
        )
    return counts, stats, scale


def target_stats(values: torch.Tensor) -> dict[str, float]:
    """Count, mean, standard deviation, minimum, median and maximum of a split's targets."""
    v = values.double()
    return {
        "count": float(len(v)),
        "mean": float(v.mean()),
        "std": float(v.std()) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "median": float(v.median()),
        "max": float(v.max()),
    }
