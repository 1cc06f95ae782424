"""``head --unfreeze-last 2`` of a ViT: its frozen blocks computed once, against every epoch running them.

vit_tiny_patch16_224 (random initialisation: no transformer weights install offline; the work
is the same as with pretrained ones) on builtin:mnist5k at 224 px. The last block, the final
norm and the head train; the 11 blocks before them are frozen. With the cache, the tokens
entering the last block are computed once and each epoch runs one block; without it
(``--no-cache``), each epoch runs all twelve. Both runs use the same kernels, batch size and
seed; their epochs are timed by ``fit`` itself, and 10 epochs projected from them.

    .venv/bin/python bench/vit_unfreeze.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402
from speed import DATA  # noqa: E402

from transferkit.train.config import TrainConfig  # noqa: E402
from transferkit.train.engine import fit  # noqa: E402

ARCH = "vit_tiny_patch16_224"
SIZE = 224
PROJECTED = 10


def run(out: str, *, cache: bool, epochs: int) -> tuple[dict, list[str], float]:
    logged: list[str] = []
    config = TrainConfig(
        model=ARCH, data=DATA, out=out, strategy="head", unfreeze_last=2, epochs=epochs, image_size=SIZE,
        cache=cache, precision="fp32", channels_last=False,
    )
    started = time.perf_counter()
    summary = fit(config, log=logged.append)
    return summary, logged, time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cached, logged, cached_wall = run(f"{tmp}/cached", cache=True, epochs=2)
        plain, _, plain_wall = run(f"{tmp}/plain", cache=False, epochs=1)
    cache_line = next(m for m in logged if m.startswith("cache: "))
    cache_seconds = float(re.search(r"computed once in ([\d.]+) s", cache_line).group(1))
    tail_epoch = cached["epochs"][1]["seconds"]
    plain_epoch = plain["epochs"][0]["seconds"]
    start_up = cached_wall - sum(e["seconds"] for e in cached["epochs"])
    with_cache = cache_seconds + PROJECTED * tail_epoch
    without = PROJECTED * plain_epoch
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        f"{ARCH} (random initialisation), `head --unfreeze-last 2` (the last block, the final norm and the "
        f"head train: {cached['trainable_params']:,} parameters), builtin:mnist5k at {SIZE} px, NCHW fp32 "
        "pinned in both runs.",
        "",
        "| | seconds |",
        "|---|---:|",
        f"| cache of the last block's input, computed once | {cache_seconds:.1f} |",
        f"| an epoch on the cached tokens (one block, the norm and the head) | {tail_epoch:.1f} |",
        f"| an epoch without the cache (all twelve blocks) | {plain_epoch:.1f} |",
        f"| {PROJECTED} epochs with the cache (the cache + {PROJECTED} epochs) | {with_cache:.1f} |",
        f"| {PROJECTED} epochs without it | {without:.1f} |",
        f"| start-up of each run (decoding, model, kernel probes) | {start_up:.1f} |",
        "",
        f"An epoch on the cache is **{plain_epoch / tail_epoch:.1f}x** faster; over {PROJECTED} epochs "
        f"**{without / with_cache:.1f}x**. The frozen blocks ran once: `{cache_line}`",
    ]
    write_section("ViT head --unfreeze-last 2: the frozen blocks computed once", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
