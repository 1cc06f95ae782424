"""A first run on a new machine: what choosing its kernels costs, and what the process spends outside `fit`.

1. Measuring, against the first epoch. lite0 on builtin:mnist5k, each run in a fresh process:
   - `freeze` at 96 px, where the first epoch is the frozen layers' pass;
   - `full` at 64 px, where it is training steps.
   "Probe" times the measurement runs used to take before training (`choose_fast_path` without a
   trial: inference, and training for `full`). "Trial" is a `--reprobe` run, which measures on its
   own first batches and steps: the cost each decision reports (`measuring_seconds`: its time
   beyond what the chosen kernels would have taken) and its first epoch.
2. Start-up and wind-down: `transferkit train ... --strategy freeze --image-size 96 --epochs 10`
   with kept decisions, the process's wall time against its `fit` call's, beside
   `python -c "import torch, timm"`; three rounds, alternating, medians.

    .venv/bin/python bench/first_run.py            # writes BENCHMARKS.md "First run on a new machine"
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import command_line, machine, write_section

PYTHON = sys.executable
CASES = {"freeze": 96, "full": 64}
COMMON = ["tf_efficientnet_lite0", "--weights", "lite0", "--data", "builtin:mnist5k"]


def _child_probe(strategy: str, size: int) -> dict:
    """The probes a run used to take before training, timed on the run's own model."""
    import torch

    from transferkit.runtime.fastpath import choose_fast_path
    from transferkit.train.config import TrainConfig
    from transferkit.train.setup import build_model

    config = TrainConfig(
        model=COMMON[0], weights="lite0", data="builtin:mnist5k", strategy=strategy, image_size=size, out="unused"
    )
    model, _ = build_model(config, 10, load_weights=True)
    cpu = torch.device("cpu")
    started = time.perf_counter()
    choose_fast_path(model, (3, size, size), device=cpu, batch_size=16, train=False, max_batch_size=256, reprobe=True)
    seconds = {"inference": time.perf_counter() - started}
    if strategy == "full":
        started = time.perf_counter()
        choose_fast_path(model, (3, size, size), device=cpu, batch_size=min(config.batch_size, 64), reprobe=True)
        seconds["training"] = time.perf_counter() - started
    return seconds


def _child_trial(strategy: str, size: int, out: str) -> dict:
    """A --reprobe run of one epoch: what each decision reports it cost, and the epoch."""
    from transferkit.train.config import TrainConfig
    from transferkit.train.engine import fit

    config = TrainConfig(
        model=COMMON[0],
        weights="lite0",
        data="builtin:mnist5k",
        strategy=strategy,
        image_size=size,
        epochs=1,
        reprobe=True,
        out=out,
    )
    fit(config, log=lambda m: None)
    report = json.loads((Path(out) / "report.json").read_text())
    kernels = report["environment"]["kernels"]
    with open(Path(out) / "metrics.csv") as f:
        epoch = float(f.read().splitlines()[1].split(",")[8])
    return {
        "epoch": epoch,
        **{use: {"seconds": k["measuring_seconds"], "reason": k["reason"]} for use, k in kernels.items() if k},
    }


def _child_cli(args: list[str]) -> None:
    """`transferkit train ARGS`, with its fit call timed into the report's folder."""
    import transferkit.train.engine as engine
    from transferkit.cli.app import main

    original = engine.fit

    def timed(config, **kwargs):
        started = time.perf_counter()
        try:
            return original(config, **kwargs)
        finally:
            Path(config.out, "fit_seconds").write_text(str(time.perf_counter() - started))

    engine.fit = timed
    sys.argv = ["transferkit", "train", *args]
    main()


def _spawn(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([PYTHON, *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def measuring(tmp: str) -> list[str]:
    rows = []
    for strategy, size in CASES.items():
        probe = json.loads(_spawn(__file__, "--child", "probe", strategy, str(size))[1].splitlines()[-1])
        out = f"{tmp}/{strategy}"
        trial = json.loads(_spawn(__file__, "--child", "trial", strategy, str(size), out)[1].splitlines()[-1])
        epoch = trial["epoch"]
        probe_total = sum(probe.values())
        trial_total = sum(trial[use]["seconds"] for use in ("inference", "training") if use in trial)
        parts = ", ".join(f"{use} {s:.1f} s" for use, s in probe.items())
        tried = ", ".join(f"{use} {trial[use]['seconds']:.1f} s" for use in ("inference", "training") if use in trial)
        rows.append(
            f"| `{strategy}` {size} px | {epoch:.1f} s | {probe_total:.1f} s ({parts}): "
            f"{100 * probe_total / epoch:.0f}% | {trial_total:.1f} s ({tried}): {100 * trial_total / epoch:.0f}% |"
        )
        for use in ("inference", "training"):
            if use in trial:
                rows.append(f"|  | | | {use}: {trial[use]['reason']} |")
    return rows


def outside_fit(tmp: str, rounds: int = 3) -> list[str]:
    walls, fits, imports = [], [], []
    args = [*COMMON, "--strategy", "freeze", "--image-size", "96", "--epochs", "10"]
    _spawn(__file__, "--child", "cli", *args, "--out", f"{tmp}/warm")  # keeps the decisions
    for index in range(rounds):
        order = ["cli", "import"] if index % 2 == 0 else ["import", "cli"]
        for what in order:
            if what == "import":
                imports.append(_spawn("-c", "import torch, timm")[0])
            else:
                out = f"{tmp}/cli-{index}"
                walls.append(_spawn(__file__, "--child", "cli", *args, "--out", out)[0])
                fits.append(float(Path(out, "fit_seconds").read_text()))
    wall, fit, imported = statistics.median(walls), statistics.median(fits), statistics.median(imports)
    outside = [w - f for w, f in zip(walls, fits)]
    return [
        f"- Process: {wall:.1f} s (runs {', '.join(f'{w:.1f}' for w in walls)}); `fit`: {fit:.1f} s.",
        f"- Outside `fit`: **{statistics.median(outside):.1f} s** (runs {', '.join(f'{o:.1f}' for o in outside)}).",
        f"- `import torch, timm` alone: **{imported:.1f} s** (runs {', '.join(f'{i:.1f}' for i in imports)}).",
    ]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = f"{tmp}/cache"  # a new machine: no kept decision
        rows = measuring(tmp)
        process = outside_fit(tmp)
    body = "\n".join(
        [
            f"Machine: {machine()}",
            "",
            f"Command: `{command_line()}`",
            "",
            "lite0 on builtin:mnist5k, each run in a fresh process with no kept decision. Probe: the "
            "measurement that ran before training (inference kernels and batch size; training kernels for "
            "`full`). Trial: what a `--reprobe` run's decisions report they cost beyond the chosen kernels, "
            "measured on its own first batches and steps.",
            "",
            "| run | first epoch | probe before training: share of the epoch | trial: share of the epoch |",
            "|---|---:|---|---|",
            *rows,
            "",
            "Start-up and wind-down (`transferkit train ... --strategy freeze --image-size 96 --epochs 10`, "
            "decisions kept, medians of 3 alternating rounds):",
            "",
            *process,
        ]
    )
    print(body)
    write_section("First run on a new machine", body)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "cli":
            _child_cli(rest)
        else:
            strategy, size = rest[0], int(rest[1])
            print(
                json.dumps(_child_probe(strategy, size) if kind == "probe" else _child_trial(strategy, size, rest[2]))
            )
        sys.exit(0)
    sys.exit(main())
