"""Classification metrics from a confusion matrix: those that accuracy hides on imbalanced data.

Rows of the matrix are true classes, columns predicted ones. Classes absent from the data
(no support) are left out of the macro averages, as scikit-learn does for balanced accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "MONITORS",
    "SCORES",
    "TASK_MONITORS",
    "classification_metrics",
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
# Those that each task's validation computes; the first is what auto picks (classification: acc,
# or balanced_acc on imbalanced data).
# The validation scores each task records (its metrics.csv columns, in order); the first CURVES[task] are plotted.
TASK_SCORES = {
    "classification": ("val_acc", "val_balanced_acc", "val_macro_f1"),
    "multi-label": ("val_map", "val_map_micro", "val_macro_f1", "val_subset_acc", "val_hamming"),
    "regression": ("val_mae", "val_rmse", "val_r2", "val_spearman"),
}
_CURVES = {"classification": 3, "multi-label": 3, "regression": 2}
TASK_MONITORS = {
    "classification": ("acc", "balanced_acc", "macro_f1", "loss"),
    "multi-label": ("map", "macro_f1", "loss"),
    "regression": ("mae", "rmse", "r2", "loss"),
}


def classification_metrics(confusion: Sequence[Sequence[int]], class_names: Sequence[str] | None = None) -> dict:
    """Accuracy, balanced accuracy, macro-F1, and per class precision, recall, F1 and support.

    Examples:
        >>> m = classification_metrics([[90, 0], [10, 0]], ["ok", "defect"])
        >>> m["accuracy"], m["balanced_accuracy"], round(m["macro_f1"], 3)
        (0.9, 0.5, 0.474)
    """
    rows = [[int(v) for v in row] for row in confusion]
    k = len(rows)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    support = [sum(row) for row in rows]
    predicted = [sum(rows[i][j] for i in range(k)) for j in range(k)]
    total = sum(support)
    per_class = {}
    for i, name in enumerate(names):
        tp = rows[i][i]
        precision = tp / predicted[i] if predicted[i] else 0.0
        recall = tp / support[i] if support[i] else None
        f1 = 2 * precision * recall / (precision + recall) if recall and precision + recall > 0 else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support[i]}
    present = [c for c in per_class.values() if c["support"]]
    pairs = sorted(
        ((rows[i][j], names[i], names[j]) for i in range(k) for j in range(k) if i != j and rows[i][j]),
        key=lambda t: -t[0],
    )
    return {
        "accuracy": sum(rows[i][i] for i in range(k)) / total if total else 0.0,
        "balanced_accuracy": sum(c["recall"] for c in present) / len(present) if present else 0.0,
        "macro_f1": sum(c["f1"] for c in present) / len(present) if present else 0.0,
        "per_class": per_class,
        "most_confused": [{"true": t, "predicted": p, "count": n} for n, t, p in pairs[:5]],
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
