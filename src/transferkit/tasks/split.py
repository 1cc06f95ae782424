"""Stratified splits and samples for every task: each part keeps the data's mix of labels.

Classes are stratified as they are (scikit-learn's ``train_test_split``); several labels per
image by iterative stratification (``iterstrat``'s ``MultilabelStratifiedShuffleSplit``, after
Sechidis et al., 2011), which keeps each label's share in both parts; numbers by their quantile
bins, so that both parts span the same range.
"""

from __future__ import annotations

import numpy as np

from .targets import task_of

__all__ = ["stratified_positions", "target_bins"]


def target_bins(values: list[float], most: int = 10) -> list[int]:
    """Quantile bins of ``values``: as many as ``most``, fewer while a bin would hold less than two values."""
    array = np.asarray(values, dtype=np.float64)
    for count in range(min(most, len(array) // 2), 1, -1):
        edges = np.unique(np.quantile(array, np.linspace(0, 1, count + 1)[1:-1]))
        bins = np.searchsorted(edges, array, side="right")
        if np.bincount(bins).min() >= 2:
            return bins.tolist()
    return [0] * len(array)


def stratified_positions(labels: list, *, seed: int, test: float | None = None, train: int | None = None):
    """Positions of (first part, second part) of ``labels``, the second ``test`` of them or the first ``train``.

    ``labels`` are ``Item.label`` values of one task (:func:`~transferkit.tasks.targets.task_of`).
    """
    from sklearn.model_selection import train_test_split  # imported when used: it takes ~1 s

    positions = np.arange(len(labels))
    if task_of(labels[0]) == "multi-label":
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        splitter = MultilabelStratifiedShuffleSplit(
            n_splits=1, test_size=None if test is None else test, train_size=train, random_state=seed
        )
        first, second = next(splitter.split(positions, np.asarray(labels, dtype=np.int64)))
        return first.tolist(), second.tolist()
    if task_of(labels[0]) == "regression":  # each part must be able to hold one of every bin
        second = round(test * len(labels)) if test is not None else len(labels) - train
        strata = target_bins(labels, most=min(10, second, len(labels) - second))
    else:
        strata = labels
    first, second = train_test_split(positions, test_size=test, train_size=train, random_state=seed, stratify=strata)
    return first.tolist(), second.tolist()
