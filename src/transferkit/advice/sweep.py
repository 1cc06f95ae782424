"""Sweeps of the head's settings on cached features: many trainings in the time of one epoch.

The frozen network runs once over the data (the head's input is kept); then, for each setting of
learning rate, weight decay and label smoothing, a new head trains on those features for
``epochs`` epochs with the recipe ``train --strategy freeze`` uses (zero-initialised linear head,
AdamW, linear warmup then cosine decay), once per seed. Each setting is reported as the mean
held-out score over seeds with a 95% interval (Student's t), and the best is written as a
configuration file that ``train --config FILE`` reads.

The score is the task's: accuracy for classes, macro mAP for several labels per image (binary
cross-entropy heads), MAE for numbers (lower is better; heads on standardised targets, with the
run's MSE or Huber loss). Label smoothing is searched for classes only. Imbalanced classes (as
``train`` counts them) are scored by balanced accuracy, the heads trained with balanced class
weights, as ``--balance auto`` would draw each class equally often.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.preprocess import BatchPrep
from ..errors import ConfigError
from ..serialization import write_json
from ..tasks.metrics import multilabel_metrics, regression_metrics
from ..tasks.objective import loss_function
from ..tasks.scores import imbalance, score_name
from ..train.config import IMBALANCED, TrainConfig
from ..train.optim import warmup_cosine
from ..train.setup import build_model, choose_weights, prepare_data
from .probe import Depth, extract

__all__ = ["GRID", "interval", "sweep", "train_head"]

GRID = {
    "lr": [1e-3, 3e-3, 1e-2, 3e-2],
    "weight_decay": [0.0, 1e-4, 1e-2],
    "label_smoothing": [0.0, 0.1],
}


def interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two ends of its ``confidence`` interval by Student's t (both the mean for one value).

    Examples:
        >>> interval([0.90, 0.92, 0.94])
        (0.92, 0.8703..., 0.9696...)
    """
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    from scipy.stats import t

    half = t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def train_head(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    *,
    lr: float,
    weight_decay: float,
    label_smoothing: float,
    epochs: int,
    batch_size: int,
    seed: int,
    warmup_fraction: float = 0.1,
    loss_fn: Callable | None = None,
    score_fn: Callable | None = None,
    class_weights: torch.Tensor | None = None,
) -> float:
    """Held-out score of a linear head trained on features as ``train --strategy freeze`` trains it.

    ``loss_fn(logits, targets)`` and ``score_fn(logits, targets)`` default to cross-entropy (with
    ``label_smoothing`` and ``class_weights``) and accuracy: classes.
    """
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(train_x.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.AdamW(
        [{"params": [head.weight], "weight_decay": weight_decay}, {"params": [head.bias], "weight_decay": 0.0}], lr=lr
    )
    schedule = warmup_cosine(optimizer, epochs * math.ceil(len(train_y) / batch_size), warmup_fraction)
    for _ in range(epochs):
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            logits = head(train_x[index])
            if loss_fn is None:
                loss = F.cross_entropy(logits, train_y[index], weight=class_weights, label_smoothing=label_smoothing)
            else:
                loss = loss_fn(logits, train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        if score_fn is not None:
            return float(score_fn(head(val_x), val_y))
        return float((head(val_x).argmax(1) == val_y).double().mean())


def sweep(
    config: TrainConfig,
    *,
    trials: int | None = None,
    seeds: int = 3,
    log=print,
) -> dict:
    """Train the head on cached features for every setting of :data:`GRID` (or ``trials`` random ones).

    Writes ``sweep.json`` and ``best_config.json`` (a ``train --config`` file for ``--strategy
    freeze`` with the best setting) into ``config.out``.
    """
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}.", argument="seeds")
    if trials is not None and trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}.", argument="trials")
    started = time.perf_counter()
    # A head on frozen features: auto finding none is refused as for strategy freeze.
    config = replace(choose_weights(replace(config, strategy="freeze"))[0], strategy=config.strategy)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    data = prepare_data(config, log=log)
    model, _ = build_model(config, len(data.class_names))
    prep = BatchPrep(data.preprocessing, torch.device("cpu"), channels_last=False)
    point = [Depth("head input", 0, 1)]
    train_x = extract(model, data.train.decoded.images, prep, point, progress="features: training", log=log)[0]
    val_x = extract(model, data.val.decoded.images, prep, point, progress="features: held-out", log=log)[0]
    train_x, val_x = train_x["head input"], val_x["head input"]
    cached = time.perf_counter() - started
    log(f"features of {len(train_x)} + {len(val_x)} images cached in {cached:.1f} s")
    task = config.task
    score, higher, loss_fn, score_fn = _objective(config, data)
    weights = _balanced_weights(data, score, log)
    head = partial(
        train_head,
        train_x,
        data.train.decoded.labels,
        val_x,
        data.val.decoded.labels,
        len(data.class_names),
        epochs=config.epochs,
        batch_size=config.batch_size,
        warmup_fraction=config.warmup_fraction,
        loss_fn=loss_fn,
        score_fn=score_fn,
        class_weights=weights,
    )
    rows = []
    for setting in _settings(trials, config.seed, smoothing=task == "classification"):
        scores = [head(**setting, seed=config.seed + s) for s in range(seeds)]
        mean, low, high = interval(scores)
        rows.append({**setting, "scores": scores, "mean": mean, "low": low, "high": high})
    rows.sort(key=lambda r: r["mean"], reverse=higher)
    for row in rows[:5]:
        smoothing = f" label_smoothing {row['label_smoothing']:.2g}" if task == "classification" else ""
        log(
            f"lr {row['lr']:.2g} weight_decay {row['weight_decay']:.2g}{smoothing}: {score} "
            f"{row['mean']:.4f} (95% interval {row['low']:.4f}-{row['high']:.4f}, {seeds} seeds)"
        )
    best = rows[0]
    chosen = config.to_dict() | {
        "strategy": "freeze",
        "lr": best["lr"],
        "weight_decay": best["weight_decay"],
        "label_smoothing": best["label_smoothing"],
    }
    chosen.pop("out")
    result = {
        "score": score,
        "higher_better": higher,
        "settings": rows,
        "best": {k: best[k] for k in ("lr", "weight_decay", "label_smoothing", "mean", "low", "high")},
        "seeds": seeds,
        "feature_seconds": cached,
        "seconds": time.perf_counter() - started,
    }
    write_json(Path(config.out) / "sweep.json", result)
    write_json(Path(config.out) / "best_config.json", chosen)
    return result


def _balanced_weights(data, score: str, log) -> torch.Tensor | None:
    """Balanced class weights (scikit-learn's 'balanced') where the score is balanced accuracy, else None."""
    if score != "val_balanced_acc":
        return None
    counts = torch.tensor(list(data.class_counts["train"].values()), dtype=torch.float32)
    log(f"classes imbalanced: heads trained with balanced class weights and scored by {score_name(score)}")
    return counts.sum() / (len(counts) * counts.clamp(min=1))


def _objective(config: TrainConfig, data) -> tuple[str, bool, Callable | None, Callable | None]:
    """The score's name, whether higher is better, and the head's loss and score (None: classes)."""
    if data.task == "classification":
        if imbalance(list(data.class_counts["train"].values())) <= IMBALANCED:
            return "val_acc", True, None, None

        def balanced(logits, y):
            from sklearn.metrics import balanced_accuracy_score

            return balanced_accuracy_score(y.numpy(), logits.argmax(1).numpy())

        return "val_balanced_acc", True, None, balanced
    loss_fn = loss_function(
        data.task, scale=data.target_scale, regression_loss="mse" if config.loss == "auto" else config.loss
    )
    if data.task == "multi-label":
        return "val_map", True, loss_fn, lambda logits, y: multilabel_metrics(logits, y, data.class_names)["map"]
    return "val_mae", False, loss_fn, lambda logits, y: regression_metrics(logits, y, data.target_scale)["mae"]


def _settings(trials: int | None, seed: int, *, smoothing: bool) -> list[dict]:
    grid = GRID if smoothing else {**GRID, "label_smoothing": [0.0]}
    if trials is None:
        keys = list(grid)
        return [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    rng = random.Random(seed)
    return [
        {
            "lr": 10 ** rng.uniform(-3.5, -1.0),
            "weight_decay": rng.choice([0.0, 10 ** rng.uniform(-5, -1)]),
            "label_smoothing": rng.uniform(0.0, 0.2) if smoothing else 0.0,
        }
        for _ in range(trials)
    ]
