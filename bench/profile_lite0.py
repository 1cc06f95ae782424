"""Where a `full` training step of EfficientNet-Lite0 at 224 px goes, by kind of operation.

torch.profiler over training steps (forward, backward, AdamW's step) of tf_efficientnet_lite0 at
224 px, batches of 32, in each memory format this CPU trains fp32 in (and bf16 where it computes it
natively). Self CPU time is grouped: depthwise convolutions (a weight of shape (C, 1, k, k)), the
other convolutions, their backward passes, BatchNorm, activations, copies and memory-format
conversions, and the rest; the forward, backward and optimizer step are also timed apart, unprofiled.

    .venv/bin/python bench/profile_lite0.py
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from _report import command_line, machine, write_section
from torch.profiler import ProfilerActivity, profile

from transferkit.model.factory import create_model
from transferkit.runtime.fastpath import autocast, bf16_native

BATCH, SIZE, WARMUP, STEPS = 32, 224, 2, 3


def _depthwise(shapes) -> bool:
    weights = [s for s in shapes if isinstance(s, list) and len(s) == 4 and s[1] == 1 and s[0] > 1]
    return bool(weights)


def _group(name: str, shapes) -> str:
    if name in ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution", "aten::conv2d"):
        return "convolution, depthwise" if _depthwise(shapes) else "convolution, other"
    if "convolution_backward" in name:
        return "convolution backward, depthwise" if _depthwise(shapes) else "convolution backward, other"
    if "batch_norm" in name:
        return "BatchNorm (forward and backward)"
    if any(k in name for k in ("relu", "hardtanh", "threshold", "clamp")):
        return "activations (forward and backward)"
    if any(k in name for k in ("copy_", "contiguous", "to_dense", "clone", "_to_copy", "empty_like")):
        return "copies and memory-format conversions"
    return "other"


def _profile(channels_last: bool, precision: str) -> tuple[float, dict[str, float]]:
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", num_classes=10).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (BATCH,))
    cpu = torch.device("cpu")

    parts: dict[str, float] = defaultdict(float)

    def step():
        t0 = time.perf_counter()
        with autocast(cpu, precision):
            loss = F.cross_entropy(model(x).float(), y)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        for name, seconds in (("forward", t1 - t0), ("backward", t2 - t1), ("AdamW step", t3 - t2)):
            parts[name] += seconds

    for _ in range(WARMUP):
        step()
    parts.clear()
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    rate = STEPS * BATCH / (time.perf_counter() - started)  # timed without the profiler's overhead
    phases = {f"wall: {k}": v / STEPS for k, v in parts.items()}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(STEPS):
            step()
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        groups[_group(event.key, event.input_shapes)] += event.self_cpu_time_total / 1e6 / STEPS
    return rate, dict(groups), phases


def main() -> int:
    kernels = [(False, "fp32"), (True, "fp32")]
    if bf16_native(torch.device("cpu")):
        kernels.append((True, "bf16"))
    columns = {}
    for channels_last, precision in kernels:
        label = f"{'channels-last' if channels_last else 'NCHW'} {precision}"
        columns[label] = _profile(channels_last, precision)
        print(label, f"{columns[label][0]:.1f} images/s", flush=True)
    names = sorted(
        {g for _, groups, _ in columns.values() for g in groups},
        key=lambda g: -max(c[1].get(g, 0.0) for c in columns.values()),
    )
    header = "| seconds a step (self CPU) | " + " | ".join(columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for name in names:
        cells = []
        for _, groups, _ in columns.values():
            total = sum(groups.values())
            cells.append(f"{groups.get(name, 0.0):.2f} ({groups.get(name, 0.0) / total:.0%})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for part in ("forward", "backward", "AdamW step"):
        key = f"wall: {part}"
        lines.append(f"| {key}, unprofiled | " + " | ".join(f"{c[2][key]:.2f} s" for c in columns.values()) + " |")
    lines.append("| images/s, unprofiled | " + " | ".join(f"{c[0]:.1f}" for c in columns.values()) + " |")
    body = f"""
Machine: {machine()}

Command: `{command_line()}`. tf_efficientnet_lite0 (random initialisation), 224 px, batches of
{BATCH}, {STEPS} steps after {WARMUP} of warm-up; forward, backward and AdamW's step, 2 threads.

{chr(10).join(lines)}
"""
    write_section("Where lite0's full step goes at 224 px", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
