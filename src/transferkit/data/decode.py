"""DATA decoded once: uint8 images at the preprocessing's size, in memory or in a memory-mapped file."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from .._storage import memory_budget, scratch_tensor
from ..errors import DataError, ImageReadError
from .images import read_image
from .preprocess import Preprocessing, to_uint8_tensor
from .sources import Item

__all__ = ["Decoded", "ImageDataset", "decode"]


@dataclass
class Decoded:
    """Images decoded, resized and cropped once, kept as uint8."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    storage: str = "in memory"

    @property
    def nbytes(self) -> int:
        return self.images.numel()


def decode(
    items: list[Item], pre: Preprocessing, *, spill_dir: Path | None = None, max_memory_bytes: int | None = None
) -> Decoded:
    """Decode every item to a uint8 image at the preprocessing's size; unusable files are skipped and listed.

    The images are kept in memory when they fit in ``max_memory_bytes`` (a quarter of physical
    memory by default), else in a memory-mapped file in ``spill_dir`` that is removed at once and
    freed with the tensor: decoding is still paid once, and the page cache keeps what fits.
    """
    channels, size = pre.input_size[0], pre.input_size[1]
    shape = (len(items), channels, size, size)
    needed = math.prod(shape)
    budget = memory_budget() if max_memory_bytes is None else max_memory_bytes
    if needed <= budget:
        out, storage = torch.empty(shape, dtype=torch.uint8), "in memory"
    elif spill_dir is not None:
        out, storage = scratch_tensor(shape, torch.uint8, spill_dir), f"memory-mapped in {spill_dir}"
    else:
        raise DataError(
            f"{len(items)} images at {size} px need {needed / 2**30:.1f} GiB decoded, more than the "
            f"{budget / 2**30:.1f} GiB kept in memory; lower image_size or use fewer images."
        )
    mode = "RGB" if channels == 3 else "L"
    labels, names, skipped = [], [], []
    n = 0
    for item in items:
        try:
            if item.path is not None:
                img = read_image(item.path, mode=mode)
            else:
                img = Image.fromarray(item.array).convert(mode)
        except ImageReadError as e:
            skipped.append((item.name, str(e)))
            continue
        out[n] = to_uint8_tensor(img, pre)
        labels.append(item.label)
        names.append(item.name)
        n += 1
    images = out if n == len(items) else out[:n]
    if n < len(items) and storage == "in memory":
        images = images.clone()  # release the unused rows
    return Decoded(images, torch.tensor(labels, dtype=torch.long), names, skipped, storage)


class ImageDataset(Dataset):
    """Decoded uint8 images with an optional per-image augmentation; normalisation happens per batch."""

    def __init__(self, decoded: Decoded, transform=None):
        self.decoded = decoded
        self.transform = transform

    def __len__(self) -> int:
        return len(self.decoded.labels)

    def __getitem__(self, index: int):
        image = self.decoded.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.decoded.labels[index]
