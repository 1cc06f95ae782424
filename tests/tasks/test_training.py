"""Training on several labels per image and on numbers, end to end through fit, with tiny models."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_config
from transferkit.errors import ConfigError, RunError
from transferkit.inference.runs import evaluate_run
from transferkit.tasks.metrics import multilabel_metrics, regression_metrics
from transferkit.tasks.objective import TargetScale
from transferkit.train.engine import fit
from transferkit.train.run_folder import load_run


def _images(root, count: int, seed: int = 0):
    """``count`` 16 px PNGs: random brightness in the left half and the right half (0-255 each)."""
    rng = np.random.default_rng(seed)
    halves = rng.integers(0, 256, size=(count, 2))
    for i, (left, right) in enumerate(halves):
        pixels = np.zeros((16, 16, 3), dtype=np.uint8)
        pixels[:, :8], pixels[:, 8:] = left, right
        Image.fromarray(pixels).save(root / f"{i}.png")
    return halves


def _multilabel_csv(tmp_path, count=240):
    """Labels 'left' and 'right' where that half is bright, 'rare' on 1 in 24 images; some images have none."""
    halves = _images(tmp_path, count)
    rows = []
    for i, (left, right) in enumerate(halves):
        names = [n for n, on in (("left", left > 127), ("right", right > 127), ("rare", i % 24 == 0)) if on]
        rows.append([f"{i}.png", ";".join(names)])
    return _write(tmp_path / "labels.csv", ["path", "labels"], rows)


def _regression_csv(tmp_path, count=240):
    """The target is the left half's brightness in units of 0-10."""
    halves = _images(tmp_path, count)
    return _write(
        tmp_path / "values.csv", ["path", "target"], [[f"{i}.png", l / 25.5] for i, (l, _) in enumerate(halves)]
    )


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("strategy", ["full", "freeze"])
def test_several_labels_train_to_a_high_average_precision(tmp_path, strategy):
    data = _multilabel_csv(tmp_path)
    lines = []
    config = tiny_config(
        data, tmp_path / "run", task="multi-label", strategy=strategy, epochs=6 if strategy == "full" else 8, lr=1e-2
    )
    summary = fit(config, log=lines.append)
    assert summary["task"] == "multi-label" and summary["best_val_acc"] is None
    assert summary["best_score"]["name"] == "val_map" and summary["best_score"]["value"] > 0.6
    assert any(line.startswith("task multi-label: balance none, best checkpoint by map") for line in lines)
    assert any("labels on fewer than 1 in 20 training images: rare" in line for line in lines)
    assert any("train images per label (with it, of 192): left" in line for line in lines)
    if strategy == "freeze":
        assert any(line.startswith("cache: ") for line in lines)  # the frozen features are computed once
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,phase,train_loss,val_loss,val_map,val_map_micro,val_macro_f1,val_subset_acc")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    per_label = report["best_metrics"]["per_label"]
    assert set(per_label) == {"left", "rare", "right"} and per_label["left"]["ap"] > 0.8
    assert all(0.0 < t < 1.0 for t in report["best_metrics"]["thresholds"])
    with pytest.raises(RunError, match="eval serves runs of classes; this run's task is multi-label"):
        evaluate_run(tmp_path / "run", data=str(data), trust_code=True)


def test_numbers_train_below_the_mean_predictors_error_and_resume(tmp_path):
    data = _regression_csv(tmp_path)
    config = tiny_config(data, tmp_path / "run", task="regression", strategy="full", epochs=8, lr=1e-2, loss="huber")
    fit(config, stop_after=4, log=lambda m: None)
    summary = fit(resume=tmp_path / "run", trust_code=True, log=lambda m: None)
    assert len(summary["epochs"]) == 8  # resumed after epoch 4
    values = [float(r["target"]) for r in csv.DictReader(open(data))]
    val_targets = load_run(tmp_path / "run")["history"]
    assert val_targets[-1]["val_r2"] == summary["epochs"][-1]["val_r2"]
    scale = summary["target_scale"]
    assert scale["mean"] == pytest.approx(np.mean(values), abs=0.6) and scale["std"] > 1.0
    mean_predictor = np.mean(np.abs(np.array(values) - np.mean(values)))  # MAE of always answering the mean
    best = summary["best_score"]
    assert best["name"] == "val_mae" and best["value"] < 0.6 * mean_predictor, (best, mean_predictor)
    assert summary["best"]["val_spearman"] > 0.8
    assert set(summary["target_stats"]) == {"train", "val"} and summary["target_stats"]["train"]["count"] == 192.0


def test_task_settings_are_checked():
    for changes, message in [
        (
            dict(task="regression", monitor="acc"),
            "monitor must be one of auto, mae, rmse, r2, loss for task regression",
        ),
        (dict(task="multi-label", balance="sampler"), "balance sampler balances classes"),
        (dict(task="regression", mixup=0.2), "mixup mixes classes"),
        (dict(loss="huber"), "loss huber is for regression"),
        (dict(task="regression", lr="auto"), "auto's range test trains classes"),
        (dict(task="ordinal"), "task must be one of"),
    ]:
        with pytest.raises(ConfigError, match=message):
            tiny_config("d.csv", "o", **changes)


def test_metrics_of_perfect_and_of_known_outputs():
    targets = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.float32)
    m = multilabel_metrics(targets * 8 - 4, targets, ["a", "b"])
    assert (m["map"], m["subset_accuracy"], m["hamming_loss"]) == (1.0, 1.0, 0.0)
    swapped = multilabel_metrics(targets.flip(1) * 8 - 4, targets, ["a", "b"])
    assert swapped["hamming_loss"] == 0.5 and swapped["subset_accuracy"] == 0.5
    scale = TargetScale(10.0, 2.0)
    values = torch.tensor([8.0, 10.0, 13.0])
    exact = regression_metrics(scale.standardise(values), values, scale)
    assert exact["mae"] == pytest.approx(0.0, abs=1e-6) and exact["r2"] == pytest.approx(1.0)
    off = regression_metrics(scale.standardise(values + 1.0), values, scale)
    assert off["mae"] == pytest.approx(1.0, abs=1e-5) and off["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("strategy", ["head", "gradual", "lp-ft", "scratch", "lora", "dora", "bitfit"])
@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_every_strategy_trains_each_task(tmp_path, task, strategy):
    data = _multilabel_csv(tmp_path, count=60) if task == "multi-label" else _regression_csv(tmp_path, count=60)
    extra = {"unfreeze_last": 1} if strategy == "head" else {}
    config = tiny_config(data, tmp_path / "run", task=task, strategy=strategy, epochs=2, **extra)
    summary = fit(config, log=lambda m: None)
    key = "val_map" if task == "multi-label" else "val_mae"
    assert summary["best_score"]["name"] == key and all(np.isfinite(e[key]) for e in summary["epochs"])
    assert len(summary["epochs"]) == 2 and all(np.isfinite(e["train_loss"]) for e in summary["epochs"])
