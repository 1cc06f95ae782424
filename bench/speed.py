"""transferkit against a plain PyTorch loop (bench/plain_loop.py), same data, seed and split.

1. `freeze`, 10 epochs, tf_efficientnet_lite0 from lite0 on builtin:mnist5k: wall time and accuracy.
2. `full`, 2 epochs, resnet34 and tf_efficientnet_lite0: training throughput and accuracy.
3. Time to 98% holdout accuracy on builtin:mnist5k from lite0.
4. Overhead of transferkit's loop against the same settings written by hand.

    .venv/bin/python bench/speed.py            # all, writes BENCHMARKS.md
    .venv/bin/python bench/speed.py --only 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402
from plain_loop import plain_fit  # noqa: E402

from transferkit.data.decode import ImageDataset, decode  # noqa: E402
from transferkit.data.preprocess import BatchPrep, Preprocessing  # noqa: E402
from transferkit.data.sources import open_data, split_items  # noqa: E402
from transferkit.model.factory import create_model  # noqa: E402
from transferkit.runtime.fastpath import autocast  # noqa: E402
from transferkit.train.config import TrainConfig  # noqa: E402
from transferkit.train.engine import fit  # noqa: E402
from transferkit.train.folder.run_folder import load_run  # noqa: E402
from transferkit.train.optim import create_optimizer, warmup_cosine  # noqa: E402
from transferkit.train.setup import zero_init_head  # noqa: E402
from transferkit.weights.loading import load_pretrained  # noqa: E402
from transferkit.weights.registry import get_weights  # noqa: E402

DATA = "builtin:mnist5k"
ARCH = "tf_efficientnet_lite0"


def quiet(message: str) -> None:
    pass


def split():
    source = open_data(DATA)
    return split_items(source.train, val_fraction=0.2, seed=0)


def preprocessing(size: int) -> Preprocessing:
    pre = get_weights("lite0").preprocessing
    return replace(pre, input_size=(3, size, size))


def plain_model(arch: str, weights: str | None):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10)
    if weights:
        load_pretrained(model, weights)
    return model


def tk_fit(tmp: Path, name: str, **values):
    config = TrainConfig(**{"model": ARCH, "data": DATA, "out": str(tmp / name), **values})
    started = time.perf_counter()
    summary = fit(config, log=quiet)
    return summary, time.perf_counter() - started


def bench_freeze(tmp: Path, size: int = 96) -> dict:
    # Both timings start from the raw data: transferkit's includes reading and splitting it. The
    # transferkit run is short, so it is the median of three; the plain loop (minutes) runs once.
    runs = [
        tk_fit(tmp, f"freeze-{i}", weights="lite0", strategy="freeze", epochs=10, image_size=size) for i in range(3)
    ]
    tk_walls = sorted(wall for _, wall in runs)
    summary, tk_wall = runs[0][0], tk_walls[1]
    started = time.perf_counter()
    train, val = split()
    history, _ = plain_fit(
        plain_model(ARCH, "lite0"), train, val, pre=preprocessing(size), epochs=10, lr=1e-2, train_only="classifier"
    )
    plain_wall = time.perf_counter() - started
    plain_acc = max(a for a, _ in history)
    return {
        "image_size": size,
        "transferkit_seconds": tk_wall,
        "transferkit_runs_seconds": tk_walls,
        "plain_seconds": plain_wall,
        "speedup": plain_wall / tk_wall,
        "transferkit_acc": summary["best_val_acc"],
        "plain_acc": plain_acc,
    }


def bench_full(tmp: Path, size: int = 64, rounds: int = 3) -> dict:
    # Steady state: the second epoch (training and validation) on both sides; transferkit's first
    # epoch also pays for the probes. A 2-core machine's speed drifts by 10-20% from run to run,
    # so each side runs ``rounds`` times, alternating which goes first, and medians are compared.
    train, val = split()
    results = {}
    for arch, weights in (("resnet34", None), (ARCH, "lite0")):
        tk_runs, plain_runs = [], []
        for round_index in range(rounds):
            order = ("tk", "plain") if round_index % 2 == 0 else ("plain", "tk")
            for side in order:
                if side == "tk":
                    summary, _ = tk_fit(
                        tmp,
                        f"full-{arch}-{round_index}",
                        model=arch,
                        weights=weights,
                        strategy="full",
                        epochs=2,
                        image_size=size,
                        augment="none",
                    )
                    tk_runs.append(
                        {
                            "second_epoch_seconds": summary["epochs"][1]["seconds"],
                            "total_seconds": summary["epochs"][-1]["cumulative_seconds"],
                            "acc": summary["best_val_acc"],
                            "fast_path": load_run(tmp / f"full-{arch}-{round_index}")["fast_path"]["reason"],
                        }
                    )
                else:
                    history, _ = plain_fit(
                        plain_model(arch, weights), train, val, pre=preprocessing(size), epochs=2, lr=1e-3
                    )
                    plain_runs.append(
                        {
                            "second_epoch_seconds": history[1][1] - history[0][1],
                            "total_seconds": history[-1][1],
                            "acc": max(a for a, _ in history),
                        }
                    )
        tk_epoch = statistics.median(r["second_epoch_seconds"] for r in tk_runs)
        plain_epoch = statistics.median(r["second_epoch_seconds"] for r in plain_runs)
        results[arch] = {
            "weights": weights or "none (random init: no offline ImageNet weights for resnet34)",
            "train_images": len(train),
            "transferkit_runs": tk_runs,
            "plain_runs": plain_runs,
            "transferkit_images_per_s": len(train) / tk_epoch,
            "plain_images_per_s": len(train) / plain_epoch,
            "speedup": plain_epoch / tk_epoch,
            "transferkit_total_seconds": statistics.median(r["total_seconds"] for r in tk_runs),
            "plain_total_seconds": statistics.median(r["total_seconds"] for r in plain_runs),
            "transferkit_acc": statistics.median(r["acc"] for r in tk_runs),
            "plain_acc": statistics.median(r["acc"] for r in plain_runs),
        }
    return {"image_size": size, "rounds": rounds, "models": results}


TO_98_CANDIDATES = (("full", "light"), ("full", "none"), ("lp-ft", "none"))


def bench_time_to_98(tmp: Path, size: int = 64, epochs: int = 4) -> dict:
    # transferkit's clock starts when fit is called: reading the data, building and loading the
    # model and both probes count. The plain loop's starts after its model is built and loaded.
    train, val = split()
    tried = []
    for strategy, augment in TO_98_CANDIDATES:
        summary, wall = tk_fit(
            tmp,
            f"to98-{strategy}-{augment}",
            weights="lite0",
            strategy=strategy,
            epochs=epochs,
            image_size=size,
            augment=augment,
        )
        setup = wall - summary["epochs"][-1]["cumulative_seconds"]
        reached = next((setup + e["cumulative_seconds"] for e in summary["epochs"] if e["val_acc"] >= 0.98), None)
        tried.append(
            {
                "strategy": strategy,
                "augment": augment,
                "seconds": reached,
                "curve": [round(e["val_acc"], 4) for e in summary["epochs"]],
            }
        )
    history, plain_reached = plain_fit(
        plain_model(ARCH, "lite0"), train, val, pre=preprocessing(size), epochs=epochs, lr=1e-3, target=0.98
    )
    best = min((t for t in tried if t["seconds"]), key=lambda t: t["seconds"], default=None)
    return {
        "image_size": size,
        "epochs": epochs,
        "transferkit": tried,
        "best": best,
        "plain_seconds": plain_reached,
        "plain_curve": [round(a, 4) for a, _ in history],
        "speedup": (plain_reached / best["seconds"]) if best and plain_reached else None,
    }


def hand_loop_epochs(size: int, epochs: int, fast, val_batch: int):
    """The loop transferkit runs, written by hand over the same data and kernels; yields each epoch's seconds."""
    train, val = split()
    pre = preprocessing(size)
    train_set, val_set = ImageDataset(decode(train, pre)), ImageDataset(decode(val, pre))
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=10)
    load_pretrained(model, "lite0")
    zero_init_head(model)
    fmt = torch.channels_last if fast["channels_last"] else torch.contiguous_format
    model.to(memory_format=fmt)
    prep = BatchPrep(pre, torch.device("cpu"), fast["channels_last"])
    device = torch.device("cpu")
    optimizer = create_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01)
    steps = len(train_set) // 64
    scheduler = warmup_cosine(optimizer, steps * epochs, 0.1)
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        loader = DataLoader(
            train_set, batch_size=64, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(epoch)
        )
        for images, labels in loader:
            with autocast(device, fast["precision"]):
                loss = F.cross_entropy(model(prep(images)), labels, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad(), autocast(device, fast["precision"]):
            for images, _ in DataLoader(val_set, batch_size=val_batch):
                model(prep(images)).argmax(1)
        yield time.perf_counter() - started


def bench_overhead(tmp: Path, size: int = 64, epochs: int = 6) -> dict:
    # Both sides use the same kernels (pinned, so no probe runs) and the same evaluation batch.
    # The epochs interleave: after each transferkit epoch (when it logs the epoch) the hand loop
    # runs one, so that the machine's drift, 10-20% over minutes on 2 shared cores, falls on both
    # sides alike. Each pair gives a ratio; epoch 1 warms up on both sides and is left out.
    fast, val_batch = {"channels_last": True, "precision": "fp32"}, 64
    hand = hand_loop_epochs(size, epochs, fast, val_batch)
    hand_epochs: list[float] = []

    def after_each_epoch(message: str) -> None:
        if message.startswith("epoch "):
            hand_epochs.append(next(hand))

    config = TrainConfig(
        model=ARCH,
        data=DATA,
        out=str(tmp / "overhead"),
        weights="lite0",
        strategy="full",
        epochs=epochs,
        image_size=size,
        augment="none",
        **fast,
    )
    tk_epochs = [e["seconds"] for e in fit(config, log=after_each_epoch)["epochs"]]
    ratios = [tk / by_hand for tk, by_hand in zip(tk_epochs[1:], hand_epochs[1:])]
    return {
        "image_size": size,
        "fast_path": f"{'channels-last' if fast['channels_last'] else 'NCHW'} {fast['precision']}",
        "val_batch": val_batch,
        "transferkit_epoch_seconds": tk_epochs,
        "hand_epoch_seconds": hand_epochs,
        "ratios": ratios,
        "overhead": statistics.median(ratios) - 1,
    }


def markdown(results: dict) -> str:
    ran = {}  # command -> the benchmarks whose results it wrote
    for key in sorted(results):
        ran.setdefault(results[key].get("command", command_line()), []).append(key)
    commands = "; ".join(f"`{command}` ({', '.join(keys)})" for command, keys in ran.items())
    lines = [f"Machine: {machine()}", "", f"Commands (the benchmarks each wrote): {commands}", ""]
    if "1" in results:
        r = results["1"]
        tk_runs = ", ".join(f"{t:.1f}" for t in r["transferkit_runs_seconds"])
        lines += [
            f"1. `freeze`, 10 epochs, {ARCH} from lite0 on {DATA} at {r['image_size']} px: transferkit "
            f"{r['transferkit_seconds']:.1f} s (median of {tk_runs}; "
            "frozen prefix computed once, bf16/channels-last where measured faster) "
            f"against {r['plain_seconds']:.1f} s: **{r['speedup']:.1f}x less wall time** (target 20x); holdout "
            f"accuracy {100 * r['transferkit_acc']:.1f}% against {100 * r['plain_acc']:.1f}% "
            f"({100 * (r['transferkit_acc'] - r['plain_acc']):+.1f} points; target within 0.5).",
        ]
    if "2" in results:
        r = results["2"]
        lines.append(
            f"2. `full`, 2 epochs at {r['image_size']} px, no augmentation on either side; {r['rounds']} runs a side, "
            "alternating which runs first; medians:"
        )
        for arch, m in r["models"].items():
            tk_each = ", ".join(f"{m['train_images'] / x['second_epoch_seconds']:.0f}" for x in m["transferkit_runs"])
            plain_each = ", ".join(f"{m['train_images'] / x['second_epoch_seconds']:.0f}" for x in m["plain_runs"])
            lines.append(
                f"   - {arch} (weights: {m['weights']}): second epoch {m['transferkit_images_per_s']:.0f} ({tk_each}) "
                f"against {m['plain_images_per_s']:.0f} ({plain_each}) images/s, **{m['speedup']:.2f}x** (target "
                f"1.5x); both epochs, the probes included, {m['transferkit_total_seconds']:.0f} s against "
                f"{m['plain_total_seconds']:.0f} s; accuracy {100 * m['transferkit_acc']:.1f}% against "
                f"{100 * m['plain_acc']:.1f}% ({100 * (m['transferkit_acc'] - m['plain_acc']):+.1f} points). "
                f"Kernels: {m['transferkit_runs'][0]['fast_path']}."
            )
    if "3" in results:
        r = results["3"]
        plain = f"{r['plain_seconds']:.0f} s" if r["plain_seconds"] else "not reached"
        ratio = f"**{r['speedup']:.1f}x**" if r["speedup"] else "n/a"
        best = r["best"]
        best_text = (
            f"`{best['strategy']}` with augmentation {best['augment']}, {best['seconds']:.0f} s" if best else "none"
        )
        lines.append(
            f"3. Time to 98% holdout accuracy from lite0 at {r['image_size']} px, {r['epochs']}-epoch schedules, "
            "timed from the call to `fit` (data, model, weights and probes included): best transferkit setting "
            f"{best_text}, against the plain loop {plain} (curve {r['plain_curve']}): {ratio}. "
            "All transferkit settings tried:"
        )
        for t in r["transferkit"]:
            reached = f"{t['seconds']:.0f} s" if t["seconds"] else "not reached"
            lines.append(f"   - `{t['strategy']}`, augmentation {t['augment']}: {reached} (curve {t['curve']})")
    if "4" in results:
        r = results["4"]
        each = ", ".join(f"{100 * (x - 1):+.1f}%" for x in r["ratios"])
        lines.append(
            f"4. Overhead, `full` on {ARCH} at {r['image_size']} px with the same kernels ({r['fast_path']}, "
            f"evaluation in batches of {r['val_batch']}): {len(r['hand_epoch_seconds'])} epochs a side, interleaved "
            "(a hand-loop epoch after each transferkit epoch), the first pair left out: transferkit's epoch against "
            f"the hand loop's, median **{100 * r['overhead']:+.1f}%** (pairs: {each}; target at most 5%)."
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="1,2,3,4")
    args = parser.parse_args()
    benches = {"1": bench_freeze, "2": bench_full, "3": bench_time_to_98, "4": bench_overhead}
    results_file = Path(__file__).resolve().parent / "speed-results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only.split(","):
            print(f"benchmark {key} ...", flush=True)
            results[key] = {**benches[key](Path(tmp)), "command": command_line()}
            print(json.dumps(results[key], indent=1), flush=True)
            results_file.write_text(json.dumps(results, indent=1))
    body = markdown(results)
    write_section("Speed against a plain PyTorch loop", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
