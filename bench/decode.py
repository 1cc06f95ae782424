"""Decoding a folder of 20,000 photo-sized JPEGs to 224 px: transferkit against PIL.

Makes (once, then reuses) a folder of JPEGs at 500x375, quality 90, from crops of
scikit-image's sample photos, in 10 class folders. Then, on the same files (in the page cache):

1. the decoders alone, one thread, on the first 2,000 files: PIL, PIL's draft mode, torchvision's
   and TorchCodec's ``decode_jpeg``; and the resize to 254 px alone, PIL's against torch's;
2. PIL in one process, as torchvision's ``ImageFolder`` with timm's eval transform reads them
   (open, convert, ``Resize``, ``CenterCrop``, ``PILToTensor``);
3. the same in a ``DataLoader`` with one worker per core;
4. transferkit's ``decode`` (what ``train`` does), twice, before and after the PIL runs.

    .venv/bin/python bench/decode.py [--count 20000] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _report import command_line, machine, write_section
from PIL import Image

from transferkit.data.decode import decode
from transferkit.data.items import decode_workers
from transferkit.data.preprocess import Preprocessing
from transferkit.data.sources import open_data

SIZE, CROP = 224, 0.882  # tf_efficientnet_lite0's eval preprocessing: short side 254, centre 224
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "immunohistochemistry", "hubble_deep_field")


def _make(args: tuple[Path, int, int]) -> None:
    import skimage.data

    folder, start, stop = args
    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        scale = rng.uniform(0.5, 1.0)
        ch, cw = int(h * scale), int(w * scale)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = photo[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        image = Image.fromarray(np.ascontiguousarray(crop)).resize((500, 375), Image.BICUBIC)
        path = folder / f"c{i % 10}" / f"{i:05d}.jpg"
        image.save(path, quality=90)


def make_folder(folder: Path, count: int) -> Path:
    marker = folder / f".complete-{count}"
    if marker.exists():
        return folder
    for c in range(10):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
    step = 500
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_make, [(folder, s, min(s + step, count)) for s in range(0, count, step)]))
    marker.touch()
    return folder


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} images/s"


def decoders_alone(paths: list[Path]) -> list[tuple[str, float]]:
    """Images/s of each decoder and resize on one thread."""
    from torchcodec.decoders import decode_jpeg as codec_decode
    from torchvision.io import decode_jpeg as tv_decode

    from transferkit.data.preprocess import Preprocessing, resize_crop

    pre = Preprocessing((3, SIZE, SIZE), (0.5,) * 3, (0.5,) * 3, "bicubic", CROP, "center")

    torch.set_num_threads(1)

    def data(p):
        return torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)

    def pil(p):
        with Image.open(p) as im:
            return im.convert("RGB")

    def draft(p):
        with Image.open(p) as im:
            im.draft("RGB", (round(SIZE / CROP),) * 2)  # DCT scaling by 1/2, 1/4, 1/8 where it keeps 254 px
            return im.convert("RGB")

    decoded = [pil(p) for p in paths[:300]]
    tensors = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in decoded]
    candidates = [
        ("decode: PIL", lambda: [pil(p) for p in paths], len(paths)),
        ("decode: PIL draft mode", lambda: [draft(p) for p in paths], len(paths)),
        ("decode: torchvision.io.decode_jpeg", lambda: [tv_decode(data(p)) for p in paths], len(paths)),
        ("decode: torchcodec decode_jpeg", lambda: [codec_decode(data(p)) for p in paths], len(paths)),
        ("resize to 254 px and crop: PIL", lambda: [_pil_resize(im) for im in decoded], len(decoded)),
        (
            "resize to 254 px and crop: torch uint8",
            lambda: [resize_crop(t, pre) for t in tensors],
            len(tensors),
        ),
    ]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision's decoders, measured for comparison
        for name, run, n in candidates:
            started = time.perf_counter()
            run()
            rows.append((name, n / (time.perf_counter() - started)))
    torch.set_num_threads(os.cpu_count())
    return rows


def _pil_resize(image: Image.Image) -> Image.Image:
    from torchvision import transforms

    return transforms.CenterCrop(SIZE)(
        transforms.Resize(round(SIZE / CROP), transforms.InterpolationMode.BICUBIC)(image)
    )


class PilFolder(torch.utils.data.Dataset):
    """What a plain loop reads with: torchvision's ImageFolder and timm's eval transform."""

    def __init__(self, paths: list[Path]):
        from torchvision import transforms

        self.paths = paths
        self.transform = transforms.Compose(
            [
                transforms.Resize(round(SIZE / CROP), transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(SIZE),
                transforms.PILToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB"))


def pil_one_process(paths: list[Path]) -> float:
    dataset = PilFolder(paths)
    out = torch.empty(len(paths), 3, SIZE, SIZE, dtype=torch.uint8)
    started = time.perf_counter()
    for i in range(len(dataset)):
        out[i] = dataset[i]
    return time.perf_counter() - started


def pil_dataloader(paths: list[Path], workers: int) -> float:
    loader = torch.utils.data.DataLoader(PilFolder(paths), batch_size=64, num_workers=workers)
    started = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - started


def transferkit_decode(folder: Path) -> tuple[float, int]:
    items = open_data(str(folder)).train
    pre = Preprocessing((3, SIZE, SIZE), (0.5,) * 3, (0.5,) * 3, "bicubic", CROP)
    started = time.perf_counter()
    decoded = decode(items, pre)
    seconds = time.perf_counter() - started
    assert len(decoded.labels) == len(items) and not decoded.skipped
    return seconds, decoded.workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--folder", type=Path, default=None, help="where the JPEGs are made (default: the cache)")
    args = parser.parse_args()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folder = args.folder or cache / "transferkit-bench" / f"jpeg{args.count}"
    started = time.perf_counter()
    make_folder(folder, args.count)
    print(f"folder {folder} ready in {time.perf_counter() - started:.0f} s", flush=True)
    paths = sorted(folder.glob("c*/*.jpg"))
    n = len(paths)
    size_mb = sum(p.stat().st_size for p in paths) / 1e6

    alone = decoders_alone(paths[:2000])
    for name, rate in alone:
        print(f"{name}: {rate:,.0f} images/s", flush=True)
    first, workers = transferkit_decode(folder)
    print(f"transferkit decode: {_rate(n, first)} ({workers} threads)", flush=True)
    pil = pil_one_process(paths)
    print(f"PIL, one process: {_rate(n, pil)}", flush=True)
    loader_workers = decode_workers()
    pil_loader = pil_dataloader(paths, loader_workers)
    print(f"PIL, DataLoader with {loader_workers} workers: {_rate(n, pil_loader)}", flush=True)
    second, _ = transferkit_decode(folder)
    print(f"transferkit decode again: {_rate(n, second)}", flush=True)
    ours = statistics.median([first, second])

    lines = [
        f"Machine: {machine()}",
        "",
        f"Command: `{command_line()}`",
        "",
        f"{n:,} JPEGs at 500x375 (quality 90, {size_mb:,.0f} MB, crops of scikit-image's photos, in the page cache), "
        f"decoded, resized (short side {round(SIZE / CROP)}, bicubic) and centre-cropped to {SIZE} px as uint8.",
        "",
        "| reader | seconds | images/s | transferkit's speed-up |",
        "|---|---:|---:|---:|",
        f"| PIL, one process (ImageFolder + timm's eval transform) | {pil:.1f} | {n / pil:,.0f} | "
        f"**{pil / ours:.2f}x** |",
        f"| PIL, DataLoader with {loader_workers} workers | {pil_loader:.1f} | {n / pil_loader:,.0f} | "
        f"{pil_loader / ours:.2f}x |",
        f"| transferkit `decode`, {workers} threads (runs before and after the PIL runs) | {first:.1f}, {second:.1f} | "
        f"{n / ours:,.0f} | |",
        "",
        f"Target: at least 3x against PIL on 2 cores: {'PASS' if pil / ours >= 3 else 'FAIL'} ({pil / ours:.2f}x).",
        "",
        "The parts alone, one thread, on the first 2,000 files (the choice of decoder and resize):",
        "",
        "| step | images/s |",
        "|---|---:|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in alone],
    ]
    write_section("Decoding JPEG folders", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
