"""``freeze`` of a ViT: the head's input computed once through timm's cut, against its floor and the plain loop.

vit_tiny_patch16_224 (random initialisation: no transformer weights install offline; the work
is the same as with pretrained ones) on builtin:mnist5k at 224 px, 10 epochs. Timed from the
call to ``fit`` (decoding, model, kernel probes included). The floor is one bare forward pass
over the 5,000 images at the inference kernels' batch, plus the head's epochs on the cached
vectors. The plain loop recomputes the frozen network every epoch; 2 of its 10 epochs are timed
and the 10 projected, as in ``bench/speed224.py``.

    .venv/bin/python bench/vit_cache.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402
from plain_loop import plain_fit  # noqa: E402
from speed import DATA, plain_model, split  # noqa: E402

from transferkit.data.decode import decode  # noqa: E402
from transferkit.data.preprocess import BatchPrep, Preprocessing  # noqa: E402
from transferkit.model.factory import create_model  # noqa: E402
from transferkit.train.config import TrainConfig  # noqa: E402
from transferkit.train.engine import fit  # noqa: E402
from transferkit.train.folder.run_folder import load_run  # noqa: E402

ARCH = "vit_tiny_patch16_224"
SIZE = 224
EPOCHS = 10
PLAIN_EPOCHS_TIMED = 2


@torch.no_grad()
def bare_pass(images: torch.Tensor, pre: Preprocessing, batch: int) -> float:
    """Seconds for the pre-logits of every image: the least any cached ``freeze`` can spend on them."""
    model = create_model(ARCH, num_classes=10).eval()
    prep = BatchPrep(pre, torch.device("cpu"), channels_last=False)
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        model.forward_head(model.forward_features(prep(images[start : start + batch])), pre_logits=True)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        logged: list[str] = []
        config = TrainConfig(model=ARCH, data=DATA, out=f"{tmp}/run", strategy="freeze", epochs=EPOCHS, image_size=SIZE)
        started = time.perf_counter()
        summary = fit(config, log=logged.append)
        wall = time.perf_counter() - started
        cache_line = next(m for m in logged if m.startswith("cache: "))
        cache_seconds = float(re.search(r"computed once in ([\d.]+) s", cache_line).group(1))
        head_seconds = sum(e["seconds"] for e in summary["epochs"]) - cache_seconds
        state = load_run(f"{tmp}/run")
        pre = Preprocessing.from_dict(state["preprocessing"])
        batch = state["fast_path_inference"].get("batch_size") or 64
    images = torch.cat([decode(part, pre).images for part in split()])
    bare = bare_pass(images, pre, batch)
    floor = bare + head_seconds
    train, val = split()
    started = time.perf_counter()
    history, _ = plain_fit(
        plain_model(ARCH, None), train, val, pre=pre, epochs=EPOCHS, lr=1e-2, train_only="head",
        stop_after=PLAIN_EPOCHS_TIMED,
    )
    plain_timed = time.perf_counter() - started
    per_epoch = history[-1][1] / len(history)
    plain = plain_timed - history[-1][1] + EPOCHS * per_epoch
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        f"{ARCH} (random initialisation), `freeze`, builtin:mnist5k at {SIZE} px, {EPOCHS} epochs.",
        "",
        "| | seconds |",
        "|---|---:|",
        f"| `fit`, from the call (decoding, model, kernel probes, cache, {EPOCHS} epochs) | {wall:.1f} |",
        f"| of which the cache of `forward_head(pre_logits=True)` | {cache_seconds:.1f} |",
        f"| of which the head's {EPOCHS} epochs on the cached vectors | {head_seconds:.1f} |",
        f"| floor: a bare forward pass over {len(images):,} images (batch {batch}) + the head's epochs | {floor:.1f} |",
        f"| plain loop, {EPOCHS} epochs ({PLAIN_EPOCHS_TIMED} timed, {per_epoch:.1f} s each) | {plain:.1f} |",
        "",
        f"`fit` against its floor: **{wall / floor:.2f}x** (target 1.2x); the plain loop against `fit`: "
        f"**{plain / wall:.1f}x** (target 20x). Best val acc {summary['best_val_acc']:.4f} (random features). "
        f"The cache line: `{cache_line}`",
        "",
        f"The plain loop is {plain / floor:.1f}x the floor itself: its epochs cost one forward pass each and "
        f"the floor is one forward pass, so over {EPOCHS} epochs no cache can be much more than {EPOCHS}x faster "
        "than the plain loop on a ViT, whose every epoch is dominated by that pass (lite0's plain epoch took 5.4x "
        f"its floor, in decoding and slower kernels, hence its 56x; this ViT's plain epoch takes "
        f"{per_epoch / bare:.1f}x).",
    ]
    write_section("ViT freeze: timm's pre-logits cut", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
