"""transferkit at the weights' own resolution (224 px) against the plain loop, and whole processes.

1. ``freeze``, 10 epochs, tf_efficientnet_lite0 from lite0 on builtin:mnist5k at 224 px, timed from the
   call to ``fit`` (decoding, model, weights and probes included), twice: with the kernel probe
   measured afresh and with the kept decision. Against its floor (one forward pass over the data at
   the fastest measured inference rate, plus the head's epochs: target within 1.2x) and against the
   plain loop, which recomputes the frozen layers every epoch. The plain loop's epochs are identical
   work; 2 of its 10 are timed and the 10 projected (35 minutes otherwise).
2. ``full`` training throughput at 224 px, lite0 and resnet34, on 640 training and 256 validation
   images of mnist5k: the second epoch's images/s on each side (target 2x).
3. torch.compile of lite0's training step at 224 px: compile time, eager and compiled images/s,
   and the epochs of mnist5k after which the compile would be repaid.
4. Whole processes at 96 px, start-up included: ``transferkit train ... --strategy freeze`` (10 epochs)
   and the plain loop as a script, and the cost of the imports alone.

    .venv/bin/python bench/speed224.py [--only 1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402
from plain_loop import plain_fit  # noqa: E402
from speed import ARCH, DATA, plain_model, preprocessing, split  # noqa: E402

from transferkit.train.config import TrainConfig  # noqa: E402
from transferkit.train.engine import fit  # noqa: E402
from transferkit.train.folder.run_folder import load_run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "speed224.json"
PLAIN_EPOCHS_TIMED = 2


def _fit(out: Path, **values) -> tuple[dict, float, list[str]]:
    logged: list[str] = []
    config = TrainConfig(**{"model": ARCH, "data": DATA, "out": str(out), **values})
    started = time.perf_counter()
    summary = fit(config, log=logged.append)
    return summary, time.perf_counter() - started, logged


def bench_freeze(tmp: Path, size: int = 224) -> dict:
    from transferkit.data.decode import decode

    pre = preprocessing(size)
    images = torch.cat([decode(part, pre).images for part in split()])  # (5000, 3, 224, 224) uint8, for the floor
    runs = []
    for index in range(2):  # a fresh kernel probe, then the kept decision
        if index == 0:
            os.environ["XDG_CACHE_HOME"] = str(tmp / "fresh-cache")
        out = tmp / f"freeze-{index}"
        summary, wall, logged = _fit(out, weights="lite0", strategy="freeze", epochs=10, image_size=size)
        cache_line = next(m for m in logged if m.startswith("cache: "))
        cache_seconds = float(re.search(r"computed once in ([\d.]+) s", cache_line).group(1))
        inference = load_run(tmp / f"freeze-{index}")["fast_path_inference"]
        rate = max(inference["images_per_second"].values())  # the fastest kernels measured, at their batch
        head_seconds = sum(e["seconds"] for e in summary["epochs"]) - cache_seconds
        # The floor, measured right after the run: the bare forward pass, plus the head's epochs.
        bare, folded = bare_pass(images, size)
        floor = bare + head_seconds
        runs.append(
            {
                "wall": wall,
                "cache_seconds": cache_seconds,
                "head_seconds": head_seconds,
                "inference_rate": rate,
                "images": len(images),
                "bare_pass": bare,
                "folded": folded,
                "floor": floor,
                "acc": summary["best_val_acc"],
                "decode": next(m for m in logged if m.startswith("data: ")),
                "kernels": inference["reason"],
            }
        )
    os.environ.pop("XDG_CACHE_HOME", None)
    train, val = split()
    started = time.perf_counter()
    history, _ = plain_fit(
        plain_model(ARCH, "lite0"),
        train,
        val,
        pre=preprocessing(size),
        epochs=10,
        lr=1e-2,
        train_only="classifier",
        stop_after=PLAIN_EPOCHS_TIMED,
    )
    plain_timed = time.perf_counter() - started
    per_epoch = history[-1][1] / len(history)
    plain_projected = plain_timed - history[-1][1] + 10 * per_epoch  # set-up once, then 10 equal epochs
    return {
        "image_size": size,
        "runs": runs,
        "plain_timed_seconds": plain_timed,
        "plain_epochs_timed": len(history),
        "plain_epoch_seconds": per_epoch,
        "plain_projected_seconds": plain_projected,
        "plain_acc_after_timed": history[-1][0],
    }


def _subset_folder(root: Path, n_train: int = 640, n_val: int = 256) -> Path:
    """mnist5k's first images as a PNG folder with train/ and val/, the same files for both sides."""
    train, val = split()
    for name, items in (("train", train[:n_train]), ("val", val[:n_val])):
        for i, item in enumerate(items):
            folder = root / name / str(item.label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(item.array)).save(folder / f"{i}.png")
    return root


def bench_full(tmp: Path, size: int = 224) -> dict:
    from transferkit.data.sources import open_data

    data = _subset_folder(tmp / "subset")
    source = open_data(str(data))
    results = {}
    for arch, weights in (("tf_efficientnet_lite0", "lite0"), ("resnet34", None)):
        summary, wall, logged = _fit(
            tmp / f"full-{arch}",
            model=arch,
            data=str(data),
            weights=weights,
            strategy="full",
            epochs=2,
            image_size=size,
            augment="none",
        )
        model = plain_model(arch, weights)
        history, _ = plain_fit(model, source.train, source.val, pre=preprocessing(size), epochs=2, lr=1e-3)
        tk_epoch = summary["epochs"][1]["seconds"]
        plain_epoch = history[1][1] - history[0][1]
        results[arch] = {
            "weights": weights or "none (random init)",
            "train_images": len(source.train),
            "val_images": len(source.val),
            "transferkit_images_per_s": len(source.train) / tk_epoch,
            "plain_images_per_s": len(source.train) / plain_epoch,
            "speedup": plain_epoch / tk_epoch,
            "kernels": next((m for m in logged if m.startswith("fast path for training")), ""),
            "compile": next((m for m in logged if m.startswith("torch.compile")), ""),
            "transferkit_acc": summary["best_val_acc"],
            "plain_acc": max(a for a, _ in history),
        }
    return {"image_size": size, "models": results}


def bench_compile(tmp: Path, size: int = 224) -> dict:
    import transferkit.runtime.compiled as compiled_module
    from transferkit.model.factory import create_model
    from transferkit.runtime.fastpath import choose_fast_path

    os.environ["XDG_CACHE_HOME"] = str(tmp / "compile-cache")
    model = create_model(ARCH, num_classes=10)
    device = torch.device("cpu")
    path = choose_fast_path(model, (3, size, size), device=device, batch_size=64, train=True)
    logged: list[str] = []
    threshold, compiled_module.MEASURE_FROM_SECONDS = compiled_module.MEASURE_FROM_SECONDS, 0.0
    try:
        _, decision = compiled_module.compiled_for_training(
            model, path, (3, size, size), device=device, batch_size=64, images=4000, log=logged.append
        )
    finally:  # the other parts run as a user's runs do
        compiled_module.MEASURE_FROM_SECONDS = threshold
        os.environ.pop("XDG_CACHE_HOME", None)
    per_epoch = decision.saving(4000)
    return {
        "image_size": size,
        "kernels": f"{'channels-last' if path.channels_last else 'NCHW'} {path.precision}",
        "compile_seconds": decision.compile_seconds,
        "eager": decision.eager_images_per_second,
        "compiled": decision.compiled_images_per_second,
        "saving_per_epoch": per_epoch,
        "epochs_to_repay": decision.compile_seconds / per_epoch if per_epoch > 0 else None,
        "log": logged[0],
    }


def bare_pass(images: torch.Tensor, size: int) -> tuple[float, bool]:
    """Seconds of a bare forward loop over ``images`` with the kept inference kernels, and whether BatchNorm folded.

    The network runs as the cache pass runs it: BatchNorm folded into the convolutions where any folds.
    """
    from transferkit.data.preprocess import BatchPrep
    from transferkit.model.factory import create_model
    from transferkit.runtime.fastpath import autocast, choose_fast_path
    from transferkit.train.cache.feature_cache import find_boundary, fold_batchnorm
    from transferkit.weights.loading import load_pretrained

    pre = preprocessing(size)
    model = create_model(ARCH, num_classes=10)
    load_pretrained(model, "lite0")
    for name, param in model.named_parameters():  # as freeze: everything but the head
        param.requires_grad = name.startswith("classifier")
    device = torch.device("cpu")
    # The run's kept decision (the same key: batch 16, up to 256), not a new measurement.
    fast = choose_fast_path(model, pre.input_size, device=device, batch_size=16, train=False, max_batch_size=256)
    prep = BatchPrep(pre, device, fast.channels_last)
    folded = fold_batchnorm(model, find_boundary(model, pre.input_size), images[:8], prep=prep)
    net = (folded or model).eval()
    net.to(memory_format=torch.channels_last if fast.channels_last else torch.contiguous_format)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(images), fast.inference_batch_size):
            with autocast(device, fast.precision):
                net(prep(images[start : start + fast.inference_batch_size]))
    return time.perf_counter() - started, folded is not None


PLAIN_SCRIPT = """
import sys, time
sys.path.insert(0, {bench!r})
from speed import ARCH, plain_model, preprocessing, split
from plain_loop import plain_fit
train, val = split()
history, _ = plain_fit(plain_model(ARCH, "lite0"), train, val, pre=preprocessing(96), epochs=10, lr=1e-2,
                       train_only="classifier")
print(max(a for a, _ in history), history[-1][1])
"""


def _process(argv: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - started, done.stdout


def bench_process(tmp: Path) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "process-cache")}
    exe = str(Path(sys.executable).parent / "transferkit")
    imports, _ = _process([sys.executable, "-c", "import transferkit.train.engine"], env)
    bare, _ = _process([sys.executable, "-c", "import torch, timm"], env)
    runs = []
    for index in range(2):  # the second reuses the kept kernel decision
        argv = [exe, "train", ARCH, "--weights", "lite0", "--data", DATA, "--image-size", "96", "--epochs", "10"]
        argv += ["--strategy", "freeze", "--out", str(tmp / f"process-{index}"), "--json"]
        wall, out = _process(argv, env)
        summary = json.loads(out)
        training = summary["epochs"][-1]["cumulative_seconds"]
        runs.append({"wall": wall, "training": training, "acc": summary["best_val_acc"]})
    plain_wall, out = _process([sys.executable, "-c", PLAIN_SCRIPT.format(bench=str(Path(__file__).parent))], env)
    plain_acc, plain_training = map(float, out.split())
    return {
        "import_engine": imports,
        "import_torch_timm": bare,
        "runs": runs,
        "plain_wall": plain_wall,
        "plain_training": plain_training,
        "plain_acc": plain_acc,
    }


def markdown(r: dict) -> str:
    lines = [f"Machine: {machine()}", "", f"Command: `{command_line()}` (each part writes its results)", ""]
    if "1" in r:
        f = r["1"]
        first, kept = f["runs"]
        lines += [
            f"1. `freeze`, 10 epochs, {ARCH} from lite0 on {DATA} at {f['image_size']} px, timed from the call to "
            "`fit` (reading and decoding, model, weights and probes included):",
            "",
            "| | transferkit | its floor | transferkit / floor | plain loop | plain / transferkit | accuracy |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, run in (("kernels measured afresh", first), ("kept kernel decision", kept)):
            lines.append(
                f"| {name} | {run['wall']:.1f} s | {run['floor']:.1f} s | **{run['wall'] / run['floor']:.2f}x** | "
                f"{f['plain_projected_seconds']:.0f} s | **{f['plain_projected_seconds'] / run['wall']:.1f}x** | "
                f"{100 * run['acc']:.1f}% |"
            )
        lines += [
            "",
            f"   - Floor, measured right after each run: a bare forward loop over the {kept['images']:,} decoded "
            f"images with the run's inference kernels ({first['bare_pass']:.1f} s and {kept['bare_pass']:.1f} s; "
            f"BatchNorm {'folded' if kept['folded'] else 'as loaded: none folds in timm BatchNormAct2d'}, as the "
            f"cache pass runs it), plus the head's epochs ({first['head_seconds']:.1f} s and "
            f"{kept['head_seconds']:.1f} s). The cache pass itself took {first['cache_seconds']:.1f} s and "
            f"{kept['cache_seconds']:.1f} s. Target within 1.2x of the floor: "
            f"{'PASS' if kept['wall'] / kept['floor'] <= 1.2 else 'FAIL'} with the kept decision, "
            f"{'PASS' if first['wall'] / first['floor'] <= 1.2 else 'FAIL'} measuring afresh.",
            f"   - {kept['decode']}",
            f"   - Plain loop: {f['plain_epochs_timed']} of 10 epochs timed, {f['plain_epoch_seconds']:.0f} s each "
            f"(PIL decoding and the frozen layers every epoch, fp32 NCHW), projected to 10: "
            f"{f['plain_projected_seconds']:.0f} s; accuracy after {f['plain_epochs_timed']} epochs "
            f"{100 * f['plain_acc_after_timed']:.1f}%.",
            "",
        ]
    if "2" in r:
        f = r["2"]
        lines.append(
            f"2. `full` at {f['image_size']} px, no augmentation on either side, 2 epochs; the second epoch's training "
            "and validation, images/s of training images:"
        )
        lines.append("")
        for arch, m in f["models"].items():
            lines.append(
                f"   - {arch} (weights: {m['weights']}, {m['train_images']} training and {m['val_images']} validation "
                f"images): {m['transferkit_images_per_s']:.1f} against {m['plain_images_per_s']:.1f} images/s, "
                f"**{m['speedup']:.2f}x** (target 2x: {'PASS' if m['speedup'] >= 2 else 'FAIL'}); accuracy "
                f"{100 * m['transferkit_acc']:.1f}% against {100 * m['plain_acc']:.1f}%. {m['kernels']}. {m['compile']}"
            )
        lines.append("")
    if "3" in r:
        f = r["3"]
        repay = f"{f['epochs_to_repay']:.1f} epochs" if f["epochs_to_repay"] else "never (not faster)"
        lines += [
            f"3. torch.compile of {ARCH}'s training step at {f['image_size']} px ({f['kernels']}, batches of 64): "
            f"compile {f['compile_seconds']:.0f} s; {f['compiled']:.1f} images/s compiled against {f['eager']:.1f} "
            f"eager; on mnist5k (4,000 training images) it saves {f['saving_per_epoch']:.1f} s an epoch and repays "
            f'the compile after {repay}. The log line: "{f["log"]}"',
            "",
        ]
    if "4" in r:
        f = r["4"]
        lines += [
            "4. Whole processes at 96 px, start-up included (`transferkit train tf_efficientnet_lite0 --weights lite0 "
            "--data builtin:mnist5k --image-size 96 --epochs 10 --strategy freeze`, against the plain loop as a "
            "script):",
            "",
            "| | process wall time | training (fit's clock) | plain loop process | plain / transferkit |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, run in zip(("first run (probes measured)", "second run (kept decisions)"), f["runs"]):
            lines.append(
                f"| {name} | {run['wall']:.1f} s | {run['training']:.1f} s | {f['plain_wall']:.0f} s | "
                f"**{f['plain_wall'] / run['wall']:.1f}x** |"
            )
        lines += [
            "",
            f"   Importing `transferkit.train.engine` takes {f['import_engine']:.1f} s as a process, "
            f"`import torch, timm` alone {f['import_torch_timm']:.1f} s.",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="1,2,3,4")
    args = parser.parse_args()
    benches = {"1": bench_freeze, "2": bench_full, "3": bench_compile, "4": bench_process}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only.split(","):
            started = time.perf_counter()
            results[key] = benches[key](Path(tmp))
            print(f"part {key} done in {time.perf_counter() - started:.0f} s", flush=True)
            RESULTS.write_text(json.dumps(results, indent=1))
            write_section("Speed at 224 px, and whole processes", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
