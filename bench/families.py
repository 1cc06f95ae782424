"""Every timm family at several input sizes: build, load with resampling, the frozen-feature cut, LoRA.

One small representative per family of timm's registry (the issue's list first, then one per
timm model module), each at its default size and at 64, 96 and 160 px, at random
initialisation (no transformer weights install offline). For each size, in the library
functions the commands call:

* build: ``create_model(image_size=...)`` with its dry run (what ``inspect`` does); a refused
  size gives its one-line reason;
* load: the same architecture's tensors at its default size loaded into the model at this size
  (``load_pretrained``), counting the tables timm's filters resampled and what stayed mismatched;
* cut: whether ``freeze`` computes the head's input once (the dry-run boundary or timm's
  ``forward_head(pre_logits=True)``, checked on real inputs); cut2: the same for
  ``head --unfreeze-last 2`` (the boundary, or the input of the first block that trains);
* lora: peft's adapters on the default targets, their share of the parameters, and one
  training step (forward, backward) on two images.

    .venv/bin/python bench/families.py [--quick]
"""

from __future__ import annotations

import sys
import time
import warnings

import timm
import torch
from _report import command_line, machine, write_section
from timm.models._registry import _model_to_module

from transferkit.adapters import LoraSettings, adapter_parameters, inject_lora
from transferkit.model.factory import create_model
from transferkit.model.freeze import freeze_backbone, freeze_stages
from transferkit.model.sizes import default_size
from transferkit.model.surgery import find_head, tie_distillation_head
from transferkit.train.cache.cuts import choose_cut
from transferkit.weights.loading import LoadPolicy, load_pretrained

NAMED = [
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "beit_base_patch16_224",
    "eva02_tiny_patch14_224",
    "vit_small_patch14_dinov2",
    "vit_base_patch16_clip_224",
    "vit_base_patch16_siglip_224",
    "swin_tiny_patch4_window7_224",
    "swinv2_tiny_window8_256",
    "maxvit_tiny_tf_224",
    "coatnet_0_rw_224",
    "convnext_atto",
    "convnextv2_atto",
    "efficientformerv2_s0",
    "fastvit_t8",
    "levit_128s",
    "mobilevit_xxs",
    "mobilenetv4_conv_small",
    "efficientnetv2_rw_t",
    "regnetx_002",
    "resnet18",
    "nfnet_l0",
]
SIZES = (64, 96, 160)
_SMALL = ("test_", "atto", "pico", "femto", "nano", "xxs", "tiny", "small", "_s0", "_t", "18", "b0", "xs", "mini")


def representatives(quick: bool) -> list[str]:
    """The named models, then the smallest-sounding model of every other timm module."""
    chosen = list(NAMED)
    covered = {_model_to_module.get(n) for n in chosen}
    by_module: dict[str, list[str]] = {}
    for name in timm.list_models():
        by_module.setdefault(_model_to_module.get(name), []).append(name)
    if quick:
        return chosen
    for module, names in sorted(by_module.items()):
        if module in covered:
            continue
        plain = [n for n in names if not n.startswith("test_")] or names
        ranked = sorted(plain, key=lambda n: (min((i for i, s in enumerate(_SMALL) if s in n), default=99), len(n)))
        chosen.append(ranked[0])
    return chosen


def _images(size: int) -> torch.Tensor:
    return torch.rand(2, 3, size, size)


def cut_kind(model, head: str, x: torch.Tensor) -> str:
    """How a phase with this model's frozen parameters caches, as ``cache_frozen_prefix`` chooses (none: no cut)."""
    chosen = choose_cut(model, head, x, tuple(x.shape[1:]), prep=lambda images: images)
    return "none" if isinstance(chosen, str) else chosen.kind


def one(name: str, size: int | None) -> dict:
    row = {"model": name, "size": size}
    started = time.perf_counter()
    try:
        model = create_model(name, num_classes=5, image_size=size)
    except Exception as e:  # the refusal, in its own words
        row.update(build="refused" if "cannot take" in str(e) else "error", why=str(e)[:140].replace("|", "/"))
        row["seconds"] = time.perf_counter() - started
        return row
    row["build"] = "ok"
    row["size"] = size or default_size(model)
    head = find_head(model)
    try:
        reference = create_model(name, num_classes=5).state_dict()
        report = load_pretrained(model, reference, policy=LoadPolicy(allow_partial=True, min_loaded=0.0))
        row["resampled"] = len(report.resampled)
        row["mismatched"] = len(report.mismatched)
        row["load"] = "ok"
    except Exception as e:
        row["load"] = f"error: {type(e).__name__}"
    model.eval()
    tie_distillation_head(model)  # as training does for new classes
    freeze_backbone(model, head=head)
    x = _images(row["size"])
    row["cut"] = cut_kind(model, head, x)
    try:
        unfrozen = create_model(name, num_classes=5, image_size=size).eval()
        freeze_stages(unfrozen, keep_last=2)
        row["cut2"] = cut_kind(unfrozen, head, x)
    except Exception as e:
        row["cut2"] = f"error: {type(e).__name__}"
    try:
        fresh = create_model(name, num_classes=5, image_size=size)
        inject_lora(fresh, find_head(fresh), LoraSettings())
        trains = sum(p.numel() for n, p in fresh.named_parameters() if n in set(adapter_parameters(fresh)))
        total = sum(p.numel() for p in fresh.parameters())
        fresh.train()
        fresh(x).sum().backward()
        row["lora"] = f"{trains / total:.1%}"
    except Exception as e:
        row["lora"] = f"error: {type(e).__name__}: {str(e)[:60]}".replace("|", "/")
    row["seconds"] = time.perf_counter() - started
    return row


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    quick = "--quick" in sys.argv
    rows = []
    for name in representatives(quick):
        for size in (None, *SIZES):
            rows.append(one(name, size))
            print(rows[-1], flush=True)
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        "Random initialisation, 5 classes. size: the default (first row of each model) and 64, 96, 160 px. "
        "resampled: tensors timm's filter resampled when the default-size tensors loaded; cut: how `freeze` "
        "caches the head's input (boundary: the dry-run prefix; pre_logits: timm's forward_head cut; none: "
        "cache off); cut2: the same for `head --unfreeze-last 2` (input: the input of the first block that "
        "trains); lora: the adapters' and head's share of the parameters, after one training step.",
        "",
        "| model | size | build | load (resampled, mismatched) | cut | cut2 | lora | seconds |",
        "|---|---:|---|---|---|---|---|---:|",
    ]
    for r in rows:
        if r["build"] != "ok":
            why = f"{r['build']}: {r.get('why', '')}"
            lines.append(f"| {r['model']} | {r['size']} | {why} | | | | | {r['seconds']:.1f} |")
            continue
        load = f"{r['load']} ({r.get('resampled', '-')}, {r.get('mismatched', '-')})"
        cells = [r["model"], r["size"], "ok", load, r["cut"], r["cut2"], r["lora"], f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    ok = sum(1 for r in rows if r["build"] == "ok")
    lines += ["", f"{ok} of {len(rows)} model-size pairs built and ran; {len(rows) - ok} refused or failed."]
    write_section("Families and sizes", "\n".join(lines))


if __name__ == "__main__":
    main()
