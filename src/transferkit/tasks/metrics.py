"""Every task's validation scores, computed (their names and which each task records: :mod:`~transferkit.tasks.scores`).

Classes: accuracy, and from the confusion matrix what accuracy hides on imbalanced data (balanced
accuracy, macro-F1, per class); rows of the matrix are true classes, columns predicted ones, and
classes absent from the data (no support) are left out of the macro averages, as scikit-learn does
for balanced accuracy.

Several labels: mean average precision over labels (macro: each label counts once; micro: each
decision does), F1, precision and recall per label at 0.5 and at the threshold that maximises
that label's F1 on these images (kept for prediction), subset accuracy (every label right) and
Hamming loss (the share of wrong decisions), by scikit-learn's functions. Labels without a positive
image have no average precision and are left out of the macro mean, as scikit-learn warns it would be
ill-defined. Numbers: MAE, RMSE and R² in the target's units, and Spearman's rank correlation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .objective import TargetScale

__all__ = [
    "at_thresholds",
    "best_thresholds",
    "classification_metrics",
    "confused_label_pairs",
    "label_average_precisions",
    "macro_map",
    "multilabel_metrics",
    "regression_metrics",
]


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


def best_thresholds(targets: np.ndarray, probabilities: np.ndarray) -> list[float]:
    """Per label, the probability threshold with the highest F1 on these images (0.5 for a label never present)."""
    from sklearn.metrics import precision_recall_curve

    chosen = []
    for k in range(targets.shape[1]):
        if targets[:, k].sum() == 0:
            chosen.append(0.5)
            continue
        precision, recall, thresholds = precision_recall_curve(targets[:, k], probabilities[:, k])
        f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
        chosen.append(float(thresholds[int(np.argmax(f1))]))
    return chosen


def label_average_precisions(targets: np.ndarray, scores: np.ndarray) -> list[float | None]:
    """Each label's average precision of ``scores`` (probabilities or logits) against 0/1 ``targets``
    (N, K); None for a label no image has.

    Examples:
        >>> label_average_precisions(np.array([[1, 0], [0, 0]]), np.array([[0.9, 0.2], [0.1, 0.3]]))
        [1.0, None]
    """
    from sklearn.metrics import average_precision_score

    present = targets.sum(0) > 0
    return [
        float(average_precision_score(targets[:, k], scores[:, k])) if present[k] else None
        for k in range(targets.shape[1])
    ]


def macro_map(targets: np.ndarray, scores: np.ndarray) -> float:
    """The mean average precision over the labels some image has (0 when none has any)."""
    found = [a for a in label_average_precisions(targets, scores) if a is not None]
    return float(np.mean(found)) if found else 0.0


def multilabel_metrics(logits: torch.Tensor, targets: torch.Tensor, names: list[str]) -> dict:
    """mAP (macro, micro), macro-F1, subset accuracy, Hamming loss, and per label AP, P, R, F1 and thresholds."""
    from sklearn.metrics import accuracy_score, average_precision_score, hamming_loss, precision_recall_fscore_support

    y = targets.numpy().astype(np.int64)
    p = torch.sigmoid(logits.float()).numpy()
    decided = (p >= 0.5).astype(np.int64)
    present = y.sum(0) > 0
    ap = label_average_precisions(y, p)
    precision, recall, f1, support = precision_recall_fscore_support(y, decided, average=None, zero_division=0)
    thresholds = best_thresholds(y, p)
    per_label = {
        name: {
            "ap": ap[k],
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "threshold": thresholds[k],
        }
        for k, name in enumerate(names)
    }
    return {
        "map": macro_map(y, p),
        "map_micro": float(average_precision_score(y, p, average="micro")) if any(present) else 0.0,
        "macro_f1": float(np.mean(f1[present])) if any(present) else 0.0,
        "subset_accuracy": float(accuracy_score(y, decided)),
        "hamming_loss": float(hamming_loss(y, decided)),
        "per_label": per_label,
        "thresholds": thresholds,
    }


def at_thresholds(
    targets: torch.Tensor, probabilities: torch.Tensor, thresholds: list[float], names: list[str]
) -> dict:
    """Precision, recall and F1 per label, macro-F1, subset accuracy and Hamming loss of the decisions
    ``probabilities >= thresholds``: what ``predict`` answers with the run's kept thresholds."""
    from sklearn.metrics import accuracy_score, hamming_loss, precision_recall_fscore_support

    y = targets.numpy().astype(np.int64)
    decided = (probabilities.numpy() >= np.asarray(thresholds)[None]).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(y, decided, average=None, zero_division=0)
    present = y.sum(0) > 0
    return {
        "macro_f1": float(np.mean(f1[present])) if any(present) else 0.0,
        "subset_accuracy": float(accuracy_score(y, decided)),
        "hamming_loss": float(hamming_loss(y, decided)),
        "per_label": {
            name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k])}
            for k, name in enumerate(names)
        },
    }


def confused_label_pairs(targets: torch.Tensor, decided: torch.Tensor, names: list[str], *, k: int = 10) -> list[dict]:
    """The ``k`` pairs (missed, instead) most often seen together: on one image, ``missed`` applies but was
    not predicted while ``instead`` was predicted but does not apply. Pairs never seen are left out.

    Examples:
        >>> confused_label_pairs(torch.tensor([[1, 0], [1, 0]]), torch.tensor([[0, 1], [1, 0]]), ["cat", "dog"])
        [{'missed': 'cat', 'instead': 'dog', 'count': 1}]
    """
    y, d = targets.bool(), decided.bool()
    counts = (y & ~d).double().T @ (d & ~y).double()  # (K, K): [a, b] images missing a while predicting b
    flat = counts.flatten()
    order = flat.argsort(descending=True)[:k]
    width = counts.shape[1]
    return [
        {"missed": names[int(i) // width], "instead": names[int(i) % width], "count": int(flat[i])}
        for i in order
        if flat[i] > 0
    ]


def regression_metrics(outputs: torch.Tensor, targets: torch.Tensor, scale: TargetScale) -> dict:
    """MAE, RMSE, R² and Spearman's correlation of the model's (standardised) outputs, in the target's units."""
    from scipy.stats import spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    predicted = scale.restore(outputs).double().numpy()
    true = targets.double().numpy()
    rho = spearmanr(true, predicted).statistic if len(true) > 1 and np.ptp(predicted) > 0 else 0.0
    return {
        "mae": float(mean_absolute_error(true, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(true, predicted))),
        "r2": float(r2_score(true, predicted)) if len(true) > 1 else 0.0,
        "spearman": float(rho) if np.isfinite(rho) else 0.0,
    }
