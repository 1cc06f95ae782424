"""Throughput of ViT-B/16 and ViT-L/14 at 224 px on one device: the numbers docs/scale.md extrapolates from.

For each model (timm's, built by transferkit at random initialisation: the work does not depend
on the weights' values), in images per second after warm-up:

- ``cache``: the frozen layers' pass of ``freeze``, the network up to the classifier's input
  (timm's pre-logits) in eval mode without gradients, as transferkit computes it;
- ``full``: a training step of ``full`` (forward, backward, AdamW) on 1,000 classes;
- ``lora``: the same step with transferkit's LoRA (peft, rank 8 on qkv, proj, fc1, fc2; the
  rest frozen), on a fresh model;
- the peak memory of each step (CUDA's allocator; on a CPU, not measured);
- the bytes per image of the cached features in fp16, pooled and, for ``head --unfreeze-last``,
  every token.

On CUDA the steps run in bf16 autocast (transferkit's choice on Hopper), fused AdamW; on a CPU
in float32 with a small batch, few steps.

    PYTHONPATH=src python3 bench/scale.py --device cuda [--json FILE]
    .venv/bin/python bench/scale.py --device cpu
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transferkit.adapters.lora import LoraSettings, inject_lora  # noqa: E402
from transferkit.model.factory import create_model  # noqa: E402

MODELS = ("vit_base_patch16_224", "vit_large_patch14_224")


def rate(step, batch: int, steps: int, device: torch.device) -> float:
    """Images per second of ``step()`` over ``steps`` calls after two of warm-up."""
    for _ in range(2):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - started)


def measure(name: str, device: torch.device, train_batch: int | None = None) -> dict:
    cuda = device.type == "cuda"
    model = create_model(name, num_classes=1000).to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    infer_batch, default_batch, steps = (256, 128, 10) if cuda else (8, 4, 2)
    train_batch = min(train_batch or default_batch, infer_batch)
    images = torch.randn(infer_batch, 3, 224, 224, device=device)
    labels = torch.randint(0, 1000, (train_batch,), device=device)

    model.eval()

    @torch.no_grad()
    def cache_step():
        with amp:
            model.forward_head(model.forward_features(images), pre_logits=True)

    cache = rate(cache_step, infer_batch, steps, device)
    with torch.no_grad(), amp:
        tokens = model.forward_features(images[:1])
        pooled = model.forward_head(tokens, pre_logits=True)
    params = sum(p.numel() for p in model.parameters()) / 1e6

    def training(net) -> tuple[float, float | None]:
        """(images/s, peak GiB) of training steps of ``net``'s trainable parameters."""
        net.train()
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4, fused=cuda)

        def step():
            with amp:
                loss = F.cross_entropy(net(images[:train_batch]), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        measured = rate(step, train_batch, steps, device)
        return measured, (torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None)

    full, peak = training(model)
    model = None  # freed before the LoRA model is built (a timm model holds reference cycles)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    left = torch.cuda.memory_allocated(device) / 2**30 if cuda else None  # what the full step left behind
    adapted = inject_lora(create_model(name, num_classes=1000), "head", LoraSettings()).to(device)
    lora, lora_peak = training(adapted)
    return {
        "model": name,
        "params_m": params,
        "cache_images_per_s": cache,
        "full_images_per_s": full,
        "full_batch": train_batch,
        "full_peak_gib": peak,
        "lora_images_per_s": lora,
        "lora_peak_gib": lora_peak,
        "left_before_lora_gib": left,
        "pooled_fp16_bytes": pooled[0].numel() * 2,
        "tokens_fp16_bytes": tokens[0].numel() * 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--train-batch", type=int, default=None, help="default: 128 on CUDA, 4 on a CPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = []
    for name in MODELS:
        row = measure(name, device, args.train_batch)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"device": where, "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
