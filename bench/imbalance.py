"""Class imbalance: accuracy against balanced accuracy, and what --balance changes.

An imbalanced set made from scikit-learn's 8x8 digits: classes 0-4 keep all their images,
classes 5-9 keep ``--keep`` of theirs (10% by default: a ratio of about 10; 0.45: about 2.4).
Train and val follow that distribution (as a user's own folders would); the images left out of
5-9, plus 10% of 0-4, form a balanced test folder that no checkpoint choice sees. Each --balance
mode fine-tunes EfficientNet-Lite0 from its ImageNet weights with the same seed; eval --split test
then reports on the balanced set.

    .venv/bin/python bench/imbalance.py [--epochs 4] [--seeds 0 1] [--keep 0.1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import command_line, machine, write_section
from PIL import Image
from sklearn.datasets import load_digits

import transferkit as tk
from transferkit.inference.runs import evaluate_run


def build(root: Path, seed: int = 0, keep: float = 0.1) -> dict[str, dict[str, int]]:
    """train/, val/ (imbalanced) and test/ (balanced) folders of digit PNGs; returns the counts."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}, "test": {}}
    for label in range(10):
        index = rng.permutation(np.flatnonzero(digits.target == label))
        test_size = 16
        test, rest = index[:test_size], index[test_size:]
        kept = rest if label < 5 else rest[: max(4, round(keep * len(rest)))]
        val_size = max(2, round(0.2 * len(kept)))
        parts = {"train": kept[val_size:], "val": kept[:val_size], "test": test}
        for split, chosen in parts.items():
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
            counts[split][str(label)] = len(chosen)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--keep", type=float, default=0.1, help="share of classes 5-9's images kept")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counts = build(root / "digits", keep=args.keep)
        ratio = max(counts["train"].values()) / min(counts["train"].values())
        for seed in args.seeds:
            for balance in ("none", "weighted", "sampler"):
                config = tk.TrainConfig(
                    model="tf_efficientnet_lite0",
                    weights="lite0",
                    data=str(root / "digits"),
                    out=str(root / f"{balance}-{seed}"),
                    strategy="full",
                    epochs=args.epochs,
                    image_size=64,
                    balance=balance,
                    monitor="balanced_acc",
                    seed=seed,
                )
                started = time.perf_counter()
                summary = tk.fit(config, log=lambda m: None)
                seconds = time.perf_counter() - started
                test = evaluate_run(config.out, split="test")
                minority = np.mean([test["per_class"][str(c)]["recall"] for c in range(5, 10)])
                rows.append((balance, seed, summary["best"], test, minority, seconds))
                print(
                    f"{balance:8s} seed {seed}: val acc {summary['best']['val_acc']:.3f} balanced "
                    f"{summary['best']['val_balanced_acc']:.3f}; test acc {test['accuracy']:.3f} balanced "
                    f"{test['balanced_accuracy']:.3f} macro-F1 {test['macro_f1']:.3f} minority recall {minority:.3f} "
                    f"({seconds:.0f} s)",
                    flush=True,
                )
    table = [
        "| --balance | seed | val acc | val balanced acc | test acc | test balanced acc | test macro-F1 "
        "| recall of 5-9 | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for balance, seed, best, test, minority, seconds in rows:
        table.append(
            f"| {balance} | {seed} | {100 * best['val_acc']:.1f}% | {100 * best['val_balanced_acc']:.1f}% | "
            f"{100 * test['accuracy']:.1f}% | {100 * test['balanced_accuracy']:.1f}% | {100 * test['macro_f1']:.1f}% | "
            f"{100 * minority:.1f}% | {seconds:.0f} |"
        )
    means = []
    for balance in ("none", "weighted", "sampler"):
        mine = [r for r in rows if r[0] == balance]
        means.append(
            f"- {balance}: test balanced accuracy {100 * np.mean([r[3]['balanced_accuracy'] for r in mine]):.1f}% "
            f"(accuracy {100 * np.mean([r[3]['accuracy'] for r in mine]):.1f}%), recall of the small classes "
            f"{100 * np.mean([r[4] for r in mine]):.1f}%"
        )
    train_counts = ", ".join(f"{k} {v}" for k, v in counts["train"].items())
    body = f"""
Machine: {machine()}

Command: `{command_line()}`. Data: scikit-learn's digits, classes 5-9 cut to {args.keep:.0%} (largest class over
smallest {ratio:.1f}): train {train_counts};
val in the same proportions; test balanced, 16 per class. tf_efficientnet_lite0 from `lite0`, strategy full,
{args.epochs} epochs at 64 px, best checkpoint by balanced accuracy on val, evaluated with `eval --split test`.

{chr(10).join(table)}

Means over seeds {", ".join(map(str, args.seeds))}:

{chr(10).join(means)}
"""
    title = "Class imbalance and --balance" + ("" if args.keep == 0.1 else f" at a ratio of {ratio:.1f}")
    write_section(title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
