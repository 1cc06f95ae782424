"""The validation scores by name: what ``--monitor`` may name, what each task records and may monitor, how each
is shown (its name, in percent or not), and which are plotted. Light to import: the command line's help reads it.
Computing them is :mod:`~transferkit.tasks.metrics`'.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "MONITORS",
    "SCORES",
    "TASK_MONITORS",
    "TASK_SCORES",
    "curve_scores",
    "imbalance",
    "in_percent",
    "monitored",
    "score_name",
    "scores_shown",
]

# What --monitor may name: the key of the epoch's metrics, and whether larger is better.
MONITORS = {
    "acc": ("val_acc", True),
    "balanced_acc": ("val_balanced_acc", True),
    "macro_f1": ("val_macro_f1", True),
    "loss": ("val_loss", False),
    "map": ("val_map", True),  # macro mean average precision over labels
    "mae": ("val_mae", False),
    "rmse": ("val_rmse", False),
    "r2": ("val_r2", True),
}
# How each validation score (its metrics.csv column) is named in tables, plots and the model card,
# and whether it is a share, shown in percent.
SCORES = {
    "val_acc": ("accuracy", True),
    "val_balanced_acc": ("balanced accuracy", True),
    "val_macro_f1": ("macro-F1", True),
    "val_map": ("mAP", True),
    "val_map_micro": ("micro mAP", True),
    "val_mae": ("MAE", False),
    "val_rmse": ("RMSE", False),
    "val_r2": ("R²", False),
    "val_spearman": ("Spearman", False),
}
# The validation scores each task records (its metrics.csv columns, in order); the first CURVES[task] are plotted.
TASK_SCORES = {
    "classification": ("val_acc", "val_balanced_acc", "val_macro_f1"),
    "multi-label": ("val_map", "val_map_micro", "val_macro_f1", "val_subset_acc", "val_hamming"),
    "regression": ("val_mae", "val_rmse", "val_r2", "val_spearman"),
}
_CURVES = {"classification": 3, "multi-label": 3, "regression": 2}
# What each task may monitor; the first is what auto picks (classification: acc, or balanced_acc on imbalanced data).
TASK_MONITORS = {
    "classification": ("acc", "balanced_acc", "macro_f1", "loss"),
    "multi-label": ("map", "macro_f1", "loss"),
    "regression": ("mae", "rmse", "r2", "loss"),
}


def imbalance(counts: Sequence[int]) -> float:
    """Largest class count over the smallest (inf when a class has none)."""
    counts = list(counts)
    return max(counts) / min(counts) if min(counts) > 0 else float("inf")


def monitored(row: dict, monitor: str) -> float:
    """The value of ``monitor`` in an epoch's row, signed so that larger is always better."""
    key, larger = MONITORS[monitor]
    return row[key] if larger else -row[key]


def score_name(column: str) -> str:
    """A score's name for people: ``val_map`` is "mAP"; a column without one loses its ``val_``."""
    return SCORES.get(column, (column.removeprefix("val_"), False))[0]


def in_percent(column: str) -> bool:
    """Whether a score is a share between 0 and 1, shown in percent."""
    return SCORES.get(column, ("", False))[1]


def scores_shown(*columns: str) -> tuple[tuple[str, str, bool], ...]:
    """(column, name, in percent) of each of ``columns``: what a page plots."""
    return tuple((c, score_name(c), in_percent(c)) for c in columns)


def curve_scores(task: str = "classification") -> tuple[tuple[str, str, bool], ...]:
    """What the learning curves of a run of ``task`` plot beside its losses (:func:`scores_shown`)."""
    return scores_shown(*TASK_SCORES[task][: _CURVES[task]])
