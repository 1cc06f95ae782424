"""Memory per process of ``--shard-params`` (FSDP) against DDP, two gloo processes on this machine's CPU.

ViT-B/16 and ViT-L/16 (timm, random weights) at 112 px, AdamW over every parameter, batches of
4 per process, 3 steps. Each (model, way) runs in two fresh processes. Per process:

* state: the bytes this process holds of parameters, gradients and AdamW's two moments after
  the steps, counted from the tensors (a sharded one's local shard);
* peak: the largest resident memory (RSS, sampled every 5 ms) during the steps, less the
  resident memory just before the model was built (the interpreter and imported libraries);
* seconds per step, after the first.

The model is built whole in each process, as a run does, before it is wrapped or sharded.

    .venv/bin/python bench/sharded_params.py
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402

MODELS = ("vit_base_patch16_224", "vit_large_patch16_224")
SIZE, BATCH, STEPS = 112, 4, 3
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRss:
    """The largest RSS seen while the block runs."""

    def __enter__(self):
        self.peak, self.running = rss(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def held_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    tensors = [p for p in model.parameters()] + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(local(t).numel() * local(t).element_size() for t in tensors)


def _rank(rank: int, port: int, name: str, way: str, out: str) -> None:
    import timm
    import torch.distributed as dist
    import torch.nn.functional as F

    from transferkit.train.optim import create_optimizer
    from transferkit.train.sharding import shard_model

    torch.set_num_threads(1)  # as torchrun gives each of its processes
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    before = rss()
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=SIZE, num_classes=10)
    if way == "fsdp":
        shard_model(model, precision="fp32", device=torch.device("cpu"), world_size=2)
        net = model
    else:
        net = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = create_optimizer(model, "adamw", lr=1e-4)
    x, y = torch.randn(BATCH, 3, SIZE, SIZE), torch.randint(0, 10, (BATCH,))
    times = []
    with PeakRss() as peak:
        for _ in range(STEPS):
            started = time.perf_counter()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
    held = held_bytes(model, optimizer)
    torch.save({"state": held, "peak": peak.peak - before, "step": sum(times[1:]) / (STEPS - 1)}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def measure(name: str, way: str) -> dict:
    with tempfile.TemporaryDirectory() as out, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        mp.spawn(_rank, args=(port, name, way, out), nprocs=2)
        ranks = [torch.load(f"{out}/{r}.pt") for r in range(2)]
    return {k: max(r[k] for r in ranks) for k in ranks[0]}


def main() -> None:
    gib = 2**30
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        f"Two gloo processes of one thread each, {SIZE} px, batches of {BATCH} per process, AdamW, {STEPS} steps; "
        "the larger of the two processes. State: parameters, gradients and AdamW moments held by a process. "
        "Peak: its largest resident memory during the steps, above what it held before building the model.",
        "",
        "| model | way | state per process | peak per process | against DDP | seconds per step |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in MODELS:
        found = {way: measure(name, way) for way in ("ddp", "fsdp")}
        for way, m in found.items():
            ratio = m["peak"] / found["ddp"]["peak"]
            lines.append(
                f"| {name} | {'DDP' if way == 'ddp' else 'FSDP (`--shard-params`)'} | {m['state'] / gib:.2f} GiB | "
                f"{m['peak'] / gib:.2f} GiB | {ratio:.2f}x | {m['step']:.1f} |"
            )
            print(lines[-1], flush=True)
    write_section("Sharded parameters (FSDP) against DDP: memory per process", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
