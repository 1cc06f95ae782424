"""The CUDA paths in one short run, one line per check: run by bench/gpu_check.sh.

Checks, each a command or a library call as a user would make it:

- ``probe``: the kernel probe's candidates on the device (fp16 and bf16 where supported) and its choice;
- ``amp-bf16`` and ``amp-fp16``: ``transferkit train`` with autocast, fp16 with the loss scaler
  (its scale is read back from ``last.pt``);
- ``ddp``: torchrun with 2 processes when there are 2 devices, else 1 (nccl on CUDA);
- ``process-group``: a group with transferkit's backends (gloo for CPU tensors, nccl for CUDA
  ones), one process: a DDP step on the device, a CPU all-gather, an object broadcast;
- ``shard-params``: ``--shard-params``'s FSDP2 sharding (``transferkit.train.parallel.sharding``) of a
  ViT under torchrun with transferkit's group, bf16 parameters and fp32 gradient reduction: two
  AdamW steps against the same steps unsharded, the checkpoint state gathered, peak memory;
- ``freeze-cache``: the ``freeze`` strategy computes the frozen layers once and trains the head on them;
- ``compile``: torch.compile of a training step measured against eager (compile time, both rates);
- ``scale``: ``bench/scale.py``, ViT-B/16 and ViT-L/14 throughput (the frozen pass, ``full``, LoRA)
  and peak memory, the numbers docs/scale.md extrapolates from (CUDA only: minutes on a CPU).

``--device cpu`` runs the same checks on a CPU (gloo, bf16 autocast; no fp16), to test this script.

    PYTHONPATH=src python3 bench/gpu_check.py [--device cuda] [--out DIR] [--only probe,ddp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

FAILED: list[str] = []
ONLY: set[str] = set()  # --only: the checks to run (empty: all)


def check(name: str):
    """Run the decorated check now; print one line: PASS or FAIL, what it measured, seconds."""

    def run(fn):
        if ONLY and name not in ONLY:
            return fn
        started = time.perf_counter()
        try:
            detail = fn()
            print(f"PASS {name}: {detail} ({time.perf_counter() - started:.0f} s)", flush=True)
        except Exception as e:  # every check runs, whatever the others did
            FAILED.append(name)
            reason = str(e).strip().splitlines()[-1][:400] if str(e).strip() else type(e).__name__
            print(f"FAIL {name}: {reason} ({time.perf_counter() - started:.0f} s)", flush=True)
            traceback.print_exc(file=sys.stderr)
        return fn

    return run


def transferkit(*args, launcher=(sys.executable, "-m", "transferkit"), timeout=240) -> dict:
    done = subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True, env=os.environ, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--only", default="", help="comma-separated checks to run (default: all)")
    args = parser.parse_args()
    ONLY.update(filter(None, args.only.split(",")))
    device = torch.device(args.device)
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    os.environ.setdefault("XDG_CACHE_HOME", str(out / "cache"))
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("FAIL cuda: torch.cuda.is_available() is False", flush=True)
        return 1
    gpus = torch.cuda.device_count() if cuda else 0
    where = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus)) if cuda else "CPU"
    print(f"INFO torch {torch.__version__}, CUDA {torch.version.cuda}, {where}; runs in {out}", flush=True)
    common = ["--data", "builtin:digits", "--image-size", "32", "--device", args.device, "--json"]

    if cuda:

        @check("scale")
        def _():
            script = Path(__file__).resolve().parent / "scale.py"
            done = subprocess.run(
                [sys.executable, str(script), "--device", args.device, "--json", str(out / "scale.json")],
                capture_output=True,
                text=True,
                timeout=240,
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr.strip()[-600:])
            return done.stdout.strip().splitlines()[-1]

    @check("probe")
    def _():
        from transferkit.model.factory import create_model
        from transferkit.runtime.fastpath import candidates, choose_fast_path

        model = create_model("resnet18", num_classes=10).to(device)
        options = candidates(device)
        chosen = choose_fast_path(model, (3, 64, 64), device=device, batch_size=32, train=True, reprobe=True)
        measured = ", ".join(f"{k} {v:.0f}" for k, v in chosen.images_per_second.items())
        if len(chosen.images_per_second) != len(options):
            raise RuntimeError(f"{len(options)} candidates, {len(chosen.images_per_second)} measured")
        label = f"{'channels-last' if chosen.channels_last else 'NCHW'} {chosen.precision}"
        return f"chose {label} for resnet18 at 64 px from images/s: {measured}"

    # fp16 autocast on a CPU runs without fast kernels (minutes for this check): CUDA only.
    for precision in ("bf16", "fp16") if cuda else ("bf16",):

        @check(f"amp-{precision}")
        def _(precision=precision):
            run = out / f"amp-{precision}"
            summary = transferkit("train", "resnet18", *common, "--epochs", "2", "--precision", precision, "--out", run)
            losses = [e["train_loss"] for e in summary["epochs"]]
            if not all(map(lambda v: v == v and abs(v) < 1e6, losses)):
                raise RuntimeError(f"training losses {losses}")
            scale = ""
            if precision == "fp16":
                state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
                scaler = state.get("scaler") or {}
                if not scaler.get("scale"):
                    raise RuntimeError("fp16 ran without a loss scaler state in last.pt")
                scale = f", loss scale {float(scaler['scale']):g}"
            return f"losses {[round(v, 3) for v in losses]}, best val_acc {summary['best_val_acc']:.3f}{scale}"

    @check("ddp")
    def _():
        processes = 2 if gpus >= 2 else 1
        launcher = (sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "-m", "transferkit")
        summary = transferkit(
            "train", "resnet18", *common, "--epochs", "2", "--out", out / "ddp", launcher=launcher, timeout=300
        )
        backend = "nccl" if cuda else "gloo"
        return f"{processes} process(es), {backend}, best val_acc {summary['best_val_acc']:.3f}"

    @check("process-group")
    def _():
        script = out / "group.py"
        script.write_text(
            "import torch, torch.distributed as dist\n"
            "from transferkit.train.parallel.distributed import group_backend\n"
            "dist.init_process_group(backend=group_backend())  # as init_from_env joins it\n"
            f"net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2).to({str(device)!r}))\n"
            f"net(torch.randn(4, 8, device={str(device)!r})).sum().backward()\n"
            "parts = [torch.empty(3) for _ in range(dist.get_world_size())]\n"
            "dist.all_gather(parts, torch.arange(3.0))\n"
            "box = [{'rank': dist.get_rank()}]\n"
            "dist.broadcast_object_list(box, src=0)\n"
            "grad = net.module.weight.grad.abs().sum().item()\n"
            "print(f'backend {dist.get_backend()}, DDP gradient sum {grad:.3f}, all_gather {parts}, object {box}')\n"
        )
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", str(script)]
        done = subprocess.run(launcher, capture_output=True, text=True, env=os.environ, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-600:])
        return done.stdout.strip().splitlines()[-1]

    @check("shard-params")
    def _():
        script = Path(__file__).resolve().parent / "shard_step.py"
        processes = max(1, min(2, gpus)) if cuda else 2
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", str(script)]
        done = subprocess.run([*launcher, "--device", args.device], capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-600:])
        return done.stdout.strip().splitlines()[-1]

    @check("freeze-cache")
    def _():
        summary = transferkit(
            "train", "resnet18", *common, "--epochs", "3", "--strategy", "freeze", "--out", out / "freeze"
        )
        cached = [e["cached"] for e in summary["epochs"]]
        if not all(cached):
            raise RuntimeError(f"epochs cached: {cached}")
        times = [round(e["seconds"], 2) for e in summary["epochs"]]
        return f"every epoch on cached activations, epoch seconds {times}, best val_acc {summary['best_val_acc']:.3f}"

    @check("compile")
    def _():
        import transferkit.runtime.compiled as compiled_module
        from transferkit.model.factory import create_model
        from transferkit.runtime.fastpath import choose_fast_path

        model = create_model("resnet18", num_classes=10).to(device)
        path = choose_fast_path(model, (3, 64, 64), device=device, batch_size=32, train=True)
        compiled_module.MEASURE_FROM_SECONDS = 0.0
        logged = []
        compiled_module.compiled_for_training(
            model, path, (3, 64, 64), device=device, batch_size=32, images=10**5, reprobe=True, log=logged.append
        )
        return logged[0]

    print("PASS all" if not FAILED else f"FAIL {len(FAILED)}: {', '.join(FAILED)}", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
