"""Memory per process of ``--shard-params`` (FSDP) against DDP, two gloo processes on this machine's CPU.

ViT-B/16 and ViT-L/16 (timm, random weights) at 112 px, AdamW over every parameter, batches of
4 per process, 3 steps. Each (model, way) runs in two fresh processes. Per process:

* state: the bytes this process holds of parameters, gradients and AdamW's two moments after
  the steps, counted from the tensors (a sharded one's local shard);
* peak: the most memory in use during the steps (glibc's ``mallinfo2``: bytes allocated and not
  freed, sampled every 5 ms), less what was in use just before the model was built. Resident
  memory (RSS) would not do: memory freed by the sharding stays resident in the allocator.
* seconds per step: 2 more steps, timed without the sampling.

The model is built whole in each process, as a run does, before it is wrapped or sharded.

    .venv/bin/python bench/sharded_params.py
"""

from __future__ import annotations

import ctypes
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
SIZE, BATCH, STEPS, TIMED = 112, 4, 3, 2


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _Mallinfo2


def in_use() -> int:
    """Bytes the C allocator has handed out and not had back: small blocks and mmapped large ones."""
    info = _LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


class PeakInUse:
    """The most memory in use seen while the block runs."""

    def __enter__(self):
        self.peak, self.running = in_use(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, in_use())
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
    from transferkit.train.parallel.sharding import shard_model

    torch.set_num_threads(1)  # as torchrun gives each of its processes
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    before = in_use()
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=SIZE, num_classes=10)
    if way == "fsdp":
        shard_model(model, precision="fp32", device=torch.device("cpu"), world_size=2)
        net = model
    else:
        net = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = create_optimizer(model, "adamw", lr=1e-4)
    x, y = torch.randn(BATCH, 3, SIZE, SIZE), torch.randint(0, 10, (BATCH,))

    def step():  # as transferkit's loop steps
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()

    with PeakInUse() as peak:
        for _ in range(STEPS):
            step()
    held = held_bytes(model, optimizer)
    started = time.perf_counter()
    for _ in range(TIMED):
        step()
    seconds = (time.perf_counter() - started) / TIMED
    torch.save({"state": held, "peak": peak.peak - before, "step": seconds}, f"{out}/{rank}.pt")
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
        "Peak: the most memory in use (malloc) during the steps, above what was in use before building the model. "
        "Seconds are gloo's collectives over loopback with one thread per process, two processes on two cores: "
        "they say nothing of nccl between GPUs.",
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
