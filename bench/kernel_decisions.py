"""Does the kernel probe decide the same way twice, and does a busy machine change what a run uses?

For lite0 at 96 px (training and inference): three fresh probes
(interleaved rounds, medians, a margin for reduced precision) on a quiet machine, then one fresh
probe while a second process keeps both cores busy, then the ordinary call under the same load,
which reuses the kept decision instead of measuring.

    .venv/bin/python bench/kernel_decisions.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import torch
from _report import command_line, machine, write_section

from transferkit.model.factory import create_model
from transferkit.runtime.fastpath import choose_fast_path

BUSY = "import torch\ntorch.set_num_threads(1)\nx = torch.randn(1024, 1024)\nwhile True:\n    x @ x\n"


def _label(fast) -> str:
    return f"{'channels-last' if fast.channels_last else 'NCHW'} {fast.precision}"


def _row(name: str, model, train: bool) -> str:
    probe = dict(device=torch.device("cpu"), batch_size=16, train=train, max_batch_size=32)
    fresh = []
    for _ in range(3):
        started = time.perf_counter()
        fast = choose_fast_path(model, (3, 96, 96), reprobe=True, **probe)
        fresh.append((_label(fast), time.perf_counter() - started, fast.images_per_second))
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(2)
        kept_here = os.environ["XDG_CACHE_HOME"]
        with tempfile.TemporaryDirectory() as elsewhere:  # this measurement must not replace the kept one
            os.environ["XDG_CACHE_HOME"] = elsewhere
            loaded = choose_fast_path(model, (3, 96, 96), reprobe=True, **probe)
            os.environ["XDG_CACHE_HOME"] = kept_here
        started = time.perf_counter()
        kept = choose_fast_path(model, (3, 96, 96), **probe)
        kept_seconds = time.perf_counter() - started
    finally:
        busy.kill()
        busy.wait()
    speeds = "; ".join(", ".join(f"{k} {v:.0f}" for k, v in sorted(s.items())) for _, _, s in fresh[:1])
    row = (
        f"| {name} | {' / '.join(label for label, _, _ in fresh)} | {sum(t for _, t, _ in fresh) / 3:.1f} s | "
        f"{_label(loaded)} | {_label(kept)} ({kept_seconds * 1000:.0f} ms, reused) | {speeds} |"
    )
    print(row, flush=True)
    return row


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp  # start with no kept decision
        lite0 = create_model("tf_efficientnet_lite0", num_classes=10)
        rows.append(_row("lite0 training", lite0, True))
        rows.append(_row("lite0 inference", lite0, False))
    body = f"""
Machine: {machine()}

Command: `{command_line()}`. 96 px, batch 16. Fresh probes time every candidate in three
interleaved rounds (alternating order) and compare medians; bf16 must beat the best fp32 by 10%.
"Under load": a second process multiplies 1024x1024 matrices on one of the two cores meanwhile.

| model | three fresh probes, quiet | probe time | fresh, under load | usual call, under load | images/s (first) |
|---|---|---:|---|---|---|
{chr(10).join(rows)}

A fresh probe under load measures whatever the other process leaves and may choose otherwise;
the ordinary call reuses the decision kept for this machine, model, input and batch size and
library versions, so a run started on a busy machine uses the kernels measured on a quiet one.
`--reprobe` measures again.
"""
    write_section("Kernel decisions", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
