"""``--shard-params``'s sharding against none, under torchrun: run by bench/gpu_check.py's ``shard-params`` check.

A ViT-S/16 at 64 px takes two AdamW steps in bf16 autocast, once whole (as DDP holds it on each
process) and once sharded by :func:`transferkit.train.parallel.sharding.shard_model` (bf16 parameters,
fp32 gradient reduction), from the same weights and batch; the losses must agree, and the
sharded state gathers into the whole model on rank 0. Prints one line on rank 0. Both models
stay resident throughout: the peaks differ by what each pass adds (gradients, AdamW moments,
gathered weights, activations).

    torchrun --nproc_per_node 1 bench/shard_step.py --device cuda
"""

from __future__ import annotations

import argparse
import copy

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F

from transferkit.train.optim import create_optimizer
from transferkit.train.parallel.distributed import group_backend
from transferkit.train.parallel.sharding import gather_state, shard_model


def two_steps(net, x, y, device) -> tuple[float, float, torch.optim.Optimizer]:
    """(the loss of the second step, peak MiB on a GPU, the optimizer)."""
    optimizer = create_optimizer(net, "adamw", lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return loss.item(), peak, optimizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    device = torch.device(parser.parse_args().device)
    if device.type == "cuda":
        device = torch.device("cuda", int(__import__("os").environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend=group_backend())  # as transferkit's init_from_env joins it
    torch.manual_seed(0)
    plain = timm.create_model("vit_small_patch16_224", img_size=64, num_classes=10).to(device)
    model = copy.deepcopy(plain)
    units = shard_model(model, precision="bf16", device=device, world_size=dist.get_world_size())
    x, y = torch.randn(16, 3, 64, 64, device=device), torch.randint(0, 10, (16,), device=device)
    whole_loss, whole_peak, _ = two_steps(plain, x, y, device)
    sharded_loss, sharded_peak, optimizer = two_steps(model, x, y, device)
    gathered = gather_state(model, optimizer)  # every rank takes part; rank 0 gets the state
    if dist.get_rank() == 0:
        weights = gathered[0]
        if len(weights) != len(plain.state_dict()) or any(type(v) is not torch.Tensor for v in weights.values()):
            raise SystemExit("the gathered state is not the whole model")
        if abs(whole_loss - sharded_loss) > 0.05:
            raise SystemExit(f"losses after 2 steps differ: whole {whole_loss:.4f}, sharded {sharded_loss:.4f}")
        peaks = f"; peak MiB whole {whole_peak:.0f}, sharded {sharded_peak:.0f}" if device.type == "cuda" else ""
        print(
            f"{dist.get_world_size()} processes, {len(units)} units, {dist.get_backend()}; loss after 2 steps "
            f"whole {whole_loss:.4f}, sharded {sharded_loss:.4f}{peaks}; {len(weights)} tensors gathered"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
