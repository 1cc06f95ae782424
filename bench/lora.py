"""Parameter-efficient fine-tuning against full fine-tuning and a linear probe, with real weights.

ImageNet EfficientNet-Lite0 (`lite0`) on 5,000 MNIST digits at 64 px: `full`, `freeze`, `lora`,
`dora` and `bitfit`, the same epochs and seed. Each strategy trains in a process of its own, so
that its peak resident memory (ru_maxrss) is its own. Reported: trainable parameters and their
share, best validation accuracy, seconds per epoch (after the first, which holds the kernel
measurement and the cache), and peak RSS.

    .venv/bin/python bench/lora.py [EPOCHS]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import command_line, machine, write_section

STRATEGIES = ("full", "freeze", "lora", "dora", "bitfit")
SIZE = 64

CHILD = """
import json, resource, sys
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit

strategy, epochs, size, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config = TrainConfig(model="tf_efficientnet_lite0", weights="lite0", data="builtin:mnist5k", strategy=strategy,
                     epochs=epochs, image_size=size, out=out)
summary = fit(config, log=lambda m: None)
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


def run(strategy: str, epochs: int, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, strategy, str(epochs), str(SIZE), str(folder / strategy)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in STRATEGIES:
            results[strategy] = run(strategy, epochs, Path(tmp))
            print(strategy, results[strategy], flush=True)
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        f"tf_efficientnet_lite0 with the `lite0` ImageNet weights on builtin:mnist5k (4,000 train, 1,000 val) "
        f"at {SIZE} px, {epochs} epochs, seed 0, default rates (LoRA rank 8, alpha 16, on the ungrouped "
        "convolutions: the stem, the 1x1 ones and the final 1x1).",
        "",
        "| strategy | trainable | share | best val acc | s/epoch | first epoch s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for strategy, r in results.items():
        total = r["trainable"] + r["frozen"]
        lines.append(
            f"| {strategy} | {r['trainable']:,} | {r['trainable'] / total:.1%} | {r['acc']:.4f} | "
            f"{r['epoch_s']:.1f} | {r['first_s']:.1f} | {r['rss_mib']:.0f} |"
        )
    write_section("Parameter-efficient fine-tuning (lite0, mnist5k)", "\n".join(lines))


if __name__ == "__main__":
    main()
