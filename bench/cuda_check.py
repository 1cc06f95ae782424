"""The CUDA paths, checked on a GPU machine: precision and memory format chosen by measurement,
MixUp, the balanced sampler, torchrun (one process: nccl needs a GPU per rank), eval with TTA
and its report, lr-find.

    PYTHONPATH=src python3 bench/cuda_check.py OUT_DIR

Each step runs the command line as a user would and fails loudly; the last line says PASS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits


def run(*args, launcher=(sys.executable, "-m", "transferkit")) -> str:
    done = subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True, env=os.environ)
    print("$", " ".join(map(str, args)), "->", done.returncode, flush=True)
    print(done.stderr[-1500:], flush=True)
    if done.returncode != 0:
        raise SystemExit(f"FAIL: {args}")
    return done.stdout


def imbalanced_digits(root: Path) -> Path:
    digits = load_digits()
    for label in range(10):
        index = np.flatnonzero(digits.target == label)
        kept = index if label < 5 else index[:18]
        for i in kept:
            folder = root / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 15.9).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def main() -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    out = Path(sys.argv[1])
    tmp = Path(tempfile.mkdtemp())
    common = ["--image-size", "32", "--device", "cuda", "--json"]
    full = json.loads(
        run(
            "train",
            "resnet18",
            "--data",
            "builtin:digits",
            "--epochs",
            "3",
            "--mixup",
            "0.2",
            "--out",
            tmp / "full",
            *common,
        )
    )
    print("full + mixup: best val_acc", full["best_val_acc"], flush=True)
    data = imbalanced_digits(tmp / "imb")
    imb = json.loads(run("train", "resnet18", "--data", data, "--epochs", "3", "--out", tmp / "imb-run", *common))
    assert imb["balance"] == "sampler" and imb["best"]["monitor"] == "balanced_acc", imb["balance"]
    print("imbalanced: balance", imb["balance"], "best", imb["best"], flush=True)
    evaluated = json.loads(run("eval", tmp / "imb-run", "--tta", "--device", "cuda", "--json"))
    assert evaluated["tta"] and Path(evaluated["report"]).is_file()
    print(
        "eval tta: acc",
        evaluated["accuracy"],
        "balanced",
        evaluated["balanced_accuracy"],
        "ece",
        evaluated["calibration"]["ece"],
        flush=True,
    )
    (out / "report.html").write_bytes(Path(evaluated["report"]).read_bytes())
    found = json.loads(
        run("lr-find", "resnet18", "--data", "builtin:digits", "--strategy", "freeze", "--out", tmp / "lr", *common)
    )
    print("lr-find: suggestion", found["suggestion"], "cached", found["cached"], flush=True)
    launcher = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "transferkit",
    )
    ddp = json.loads(
        run("train", "resnet18", "--data", data, "--epochs", "2", "--out", tmp / "ddp", *common, launcher=launcher)
    )
    # One process is no process group (nccl needs a GPU per rank): the run is the single-process one.
    assert ddp["balance"] == "sampler", ddp["balance"]
    print("torchrun, one process: balance", ddp["balance"], "best val_acc", ddp["best_val_acc"], flush=True)
    kernels = torch.load(tmp / "full" / "last.pt", weights_only=True)["fast_path"]
    print("kernels chosen for training on", torch.cuda.get_device_name(0), kernels, flush=True)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
