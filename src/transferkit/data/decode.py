"""DATA decoded once: uint8 images at the preprocessing's size, in memory or in a memory-mapped file.

When the decoded images fit neither in memory nor on the disk of the run folder, they are
streamed instead: every file is read once to find the unusable ones, then decoded again each
time it is used, by DataLoader workers (:func:`loader_workers`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from .._storage import free_bytes, memory_budget, scratch_tensor
from ..errors import ImageReadError
from .images import read_image
from .preprocess import Preprocessing, to_uint8_tensor
from .sources import Item

__all__ = ["Decoded", "ImageDataset", "LazyImages", "decode", "loader_workers"]


class LazyImages:
    """Images decoded when indexed, with the interface of an (N, C, H, W) uint8 tensor that a dataset uses."""

    def __init__(self, items: list[Item], pre: Preprocessing):
        self.items, self.pre = items, pre
        self.mode = "RGB" if pre.input_size[0] == 3 else "L"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return torch.stack([self[i] for i in range(*index.indices(len(self)))])
        return to_uint8_tensor(_open(self.items[int(index)], self.mode), self.pre)

    def numel(self) -> int:
        return 0  # nothing is held

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.pre.input_size)


def loader_workers(dataset) -> int:
    """DataLoader workers for ``dataset``: streamed images are decoded by up to 4 processes, others by none."""
    decoded = getattr(getattr(dataset, "dataset", dataset), "decoded", None)  # through a Subset too
    if decoded is None or not isinstance(decoded.images, LazyImages):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _open(item: Item, mode: str) -> Image.Image:
    if item.path is not None:
        return read_image(item.path, mode=mode)
    return Image.fromarray(item.array).convert(mode)


def _disk_can_hold(folder: Path, nbytes: int) -> bool:
    try:
        return free_bytes(folder if folder.exists() else folder.parent) > nbytes * 1.1
    except OSError:
        return False


@dataclass
class Decoded:
    """Images decoded, resized and cropped once, kept as uint8."""

    images: torch.Tensor | LazyImages  # (N, C, H, W) uint8
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
    freed with the tensor: decoding is still paid once, and the page cache keeps what fits. When
    neither holds them, they are streamed (:class:`LazyImages`): checked once here, decoded
    again at each use.
    """
    channels, size = pre.input_size[0], pre.input_size[1]
    shape = (len(items), channels, size, size)
    needed = math.prod(shape)
    budget = memory_budget() if max_memory_bytes is None else max_memory_bytes
    if needed <= budget:
        out, storage = torch.empty(shape, dtype=torch.uint8), "in memory"
    elif spill_dir is not None and _disk_can_hold(spill_dir, needed):
        out, storage = scratch_tensor(shape, torch.uint8, spill_dir), f"memory-mapped in {spill_dir}"
    else:
        out, storage = None, f"streamed from disk ({needed / 2**30:.1f} GiB decoded fit neither memory nor disk)"
    mode = "RGB" if channels == 3 else "L"
    labels, names, skipped, usable = [], [], [], []
    n = 0
    for item in items:
        try:
            img = _open(item, mode)
        except ImageReadError as e:
            skipped.append((item.name, str(e)))
            continue
        usable.append(item)
        if out is None:  # streamed: only checked now
            labels.append(item.label)
            names.append(item.name)
            continue
        out[n] = to_uint8_tensor(img, pre)
        labels.append(item.label)
        names.append(item.name)
        n += 1
    if out is None:
        return Decoded(LazyImages(usable, pre), torch.tensor(labels, dtype=torch.long), names, skipped, storage)
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
