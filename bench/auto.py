"""`--strategy auto` against the best fixed strategy: whole-run time and held-out accuracy.

For each real dataset, lite0 at 64 px for 3 epochs: one `fit` with strategy auto (the probe, then
the advised strategy), and one `fit` per fixed strategy (freeze, full, gradual, lp-ft, and the
advised `head --unfreeze-last N` when that is the advice). Each time is the whole `fit` call:
decoding, building, loading, the probe where there is one, training.

    .venv/bin/python bench/auto.py
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time

from _report import command_line, machine, write_section

from transferkit.advice.auto import fit
from transferkit.train.config import TrainConfig

DATASETS = {
    "mnist5k (1,000 train)": dict(data="builtin:mnist5k", train_images=1000, batch_size=32),
    "digits": dict(data="builtin:digits", batch_size=32),
    "faces": dict(data="builtin:faces", batch_size=32),
}
FIXED = ["freeze", "full", "gradual", "lp-ft"]


def _run(config: TrainConfig) -> tuple[float, dict]:
    started = time.perf_counter()
    summary = fit(config, log=lambda m: None)
    return time.perf_counter() - started, summary


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in DATASETS.items():
            base = TrainConfig(
                model="tf_efficientnet_lite0", weights="lite0", image_size=64, epochs=3, out=f"{tmp}/x", **settings
            )
            auto_seconds, auto = _run(dataclasses.replace(base, strategy="auto", out=f"{tmp}/{name}-auto"))
            advice = auto["advice"]
            fixed = {}
            for strategy in FIXED:
                seconds, summary = _run(dataclasses.replace(base, strategy=strategy, out=f"{tmp}/{name}-{strategy}"))
                fixed[f"--strategy {strategy}"] = (seconds, summary["best_val_acc"])
            if advice["command"] not in fixed:
                keep = int(advice["command"].split()[-1]) if advice["strategy"] == "head" else None
                chosen = dataclasses.replace(base, strategy=advice["strategy"], unfreeze_last=keep)
                seconds, summary = _run(dataclasses.replace(chosen, out=f"{tmp}/{name}-advised"))
                fixed[advice["command"]] = (seconds, summary["best_val_acc"])
            best = max(fixed, key=lambda k: fixed[k][1])
            cells = ", ".join(f"{k.split(' ', 1)[1]} {100 * a:.1f}% in {s:.0f} s" for k, (s, a) in fixed.items())
            row = (
                f"| {name} | `{advice['command']}` ({advice['seconds']:.1f} s) | {auto_seconds:.0f} s | "
                f"{100 * auto['best_val_acc']:.1f}% | `{best}`: {100 * fixed[best][1]:.1f}% "
                f"in {fixed[best][0]:.0f} s | "
                f"{cells} |"
            )
            print(row, flush=True)
            rows.append(row)
    body = f"""
Machine: {machine()}

Command: `{command_line()}`. lite0 (`--weights lite0`) at 64 px, 3 epochs, batches of 32; every
time is a whole `fit` call (decoding, building, loading weights, the probe for auto, training).

| data | advice (probe time) | auto: whole run | auto: best acc | best fixed strategy | every fixed strategy |
|---|---|---:|---:|---|---|
{chr(10).join(rows)}
"""
    write_section("Strategy auto against the best fixed strategy", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
