"""Parameter-efficient fine-tuning against full fine-tuning and a linear probe.

Accuracy, with real weights: ImageNet EfficientNet-Lite0 (`lite0`) on 5,000 MNIST digits at
64 px: `full`, `freeze`, `lora` (rank 8, and `lora:4` at rank 4), `dora` and `bitfit`, the same
epochs and seed. Reported: trainable parameters and their share, best validation accuracy,
seconds per epoch (after the first, which holds the kernel measurement and the cache), and
peak RSS.

Memory, with ``--memory``: vit_small_patch16_224 (22M parameters, random initialisation: the
memory a step needs does not depend on the weights' values) on builtin:digits at 112 px, one
epoch of `full`, `lora` (qkv, proj, fc1, fc2) and `freeze`. Full fine-tuning keeps a gradient
and two AdamW moments for every parameter; LoRA only for the adapters and the head. Each
strategy runs twice: with glibc's default heap, and with large allocations mapped apart.

Each strategy trains in a process of its own, so that its peak resident memory (ru_maxrss) is
its own.

    .venv/bin/python bench/lora.py [EPOCHS]
    .venv/bin/python bench/lora.py --memory
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import command_line, machine, write_section

ACCURACY = ("full", "freeze", "lora", "lora:4", "dora", "bitfit")  # "lora:4": LoRA at rank 4
MEMORY = ("full", "lora", "freeze")
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

CHILD = """
import json, resource, sys
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit

settings = json.loads(sys.argv[1])
summary = fit(TrainConfig(**settings), log=lambda m: None)
rows = summary["epochs"]
later = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
print(json.dumps({
    "acc": summary["best_val_acc"],
    "trainable": summary["trainable_params"],
    "frozen": summary["frozen_params"],
    "epoch_s": sum(later) / len(later),
    "first_s": rows[0]["seconds"],
    "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def run(entry: str, common: dict, folder: Path, env: dict | None = None) -> dict:
    """Train ``entry`` (a strategy, or ``lora:RANK``) with ``common`` settings in a process of its own."""
    strategy, _, rank = entry.partition(":")
    settings = {**common, "strategy": strategy, "out": str(folder / entry.replace(":", "-r"))}
    if rank:
        settings["lora_rank"] = int(rank)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(settings)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict], columns: dict[str, str]) -> list[str]:
    """Markdown rows: strategy, trainable, share, then ``columns`` (title: format of the result ``r``)."""
    lines = [
        "| strategy | trainable | share | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for entry, r in results.items():
        share = r["trainable"] / (r["trainable"] + r["frozen"])
        cells = [entry, f"{r['trainable']:,}", f"{share:.1%}", *(f.format(r=r) for f in columns.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def train_all(entries: tuple[str, ...], common: dict, env: dict | None = None) -> dict[str, dict]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries:
            results[entry] = run(entry, common, Path(tmp), env)
            print(entry, env or "", results[entry], flush=True)
    return results


def accuracy(epochs: int) -> None:
    size = 64
    common = dict(
        model="tf_efficientnet_lite0", weights="lite0", data="builtin:mnist5k", epochs=epochs, image_size=size
    )
    results = train_all(ACCURACY, common)
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        f"tf_efficientnet_lite0 with the `lite0` ImageNet weights on builtin:mnist5k (4,000 train, 1,000 val) "
        f"at {size} px, {epochs} epochs, seed 0, default rates (LoRA rank 8, alpha 16, on the ungrouped "
        "convolutions: the stem, the 1x1 ones and the final 1x1; `lora:4` is rank 4, alpha 16).",
        "",
        *table(
            results,
            {
                "best val acc": "{r[acc]:.4f}",
                "s/epoch": "{r[epoch_s]:.1f}",
                "first epoch s": "{r[first_s]:.1f}",
                "peak RSS MiB": "{r[rss_mib]:.0f}",
            },
        ),
    ]
    write_section("Parameter-efficient fine-tuning (lite0, mnist5k)", "\n".join(lines))
    print("\n".join(lines))


def memory() -> None:
    arch, size = "vit_small_patch16_224", 112
    common = dict(
        model=arch, data="builtin:digits", epochs=1, image_size=size, precision="fp32", channels_last=False
    )
    results = train_all(MEMORY, common)
    mapped = train_all(MEMORY, common, MMAP_ENV)
    for entry, r in results.items():
        r["vs_full"] = r["rss_mib"] / results["full"]["rss_mib"]
        r["mapped_s"] = mapped[entry]["first_s"]
        r["mapped_mib"] = mapped[entry]["rss_mib"]
        r["mapped_vs_full"] = mapped[entry]["rss_mib"] / mapped["full"]["rss_mib"]
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        f"{arch} (random initialisation) on builtin:digits (1,437 train images) at {size} px, one epoch, "
        "NCHW fp32 pinned, each strategy in its own process.",
        "",
        *table(
            results,
            {
                "epoch s": "{r[first_s]:.1f}",
                "peak RSS MiB": "{r[rss_mib]:.0f}",
                "against full": "{r[vs_full]:.2f}x",
                "epoch s, mmap": "{r[mapped_s]:.1f}",
                "peak RSS MiB, mmap": "{r[mapped_mib]:.0f}",
                "against full, mmap": "{r[mapped_vs_full]:.2f}x",
            },
        ),
        "",
        "mmap: the same runs with `MALLOC_MMAP_THRESHOLD_=65536`, so that glibc serves every allocation of "
        "64 KiB or more from its own mapping and returns it on free, instead of from a heap that freed "
        "tensors fragment.",
    ]
    write_section("LoRA memory on a transformer (vit_small)", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if "--memory" in sys.argv:
        memory()
    else:
        accuracy(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
