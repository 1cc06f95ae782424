"""DATA decoded once: uint8 images at the preprocessing's size, in memory or in a memory-mapped file.

Files are decoded by a pool of threads (libjpeg-turbo and torch's resize release the GIL),
one per core: :func:`decode_workers`.

When the decoded images fit neither in memory nor on the disk of the run folder, they are
streamed instead: every file is read once to find the unusable ones, then decoded again each
time it is used, by DataLoader workers (:func:`loader_workers`).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .._storage import free_bytes, memory_budget, scratch_tensor
from ..errors import ImageReadError
from .images import read_pixels
from .items import Item, Streamed, decode_workers
from .preprocess import Preprocessing, to_uint8_tensor

__all__ = [
    "Decoded",
    "ImageDataset",
    "LazyImages",
    "decode",
    "load_item",
    "loader_workers",
    "streamed",
]


class LazyImages:
    """Images decoded when indexed, with the interface of an (N, C, H, W) uint8 tensor that a dataset uses."""

    def __init__(self, items: list[Item], pre: Preprocessing):
        self.items, self.pre = items, pre

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return torch.stack([self[i] for i in range(*index.indices(len(self)))])
        return load_item(self.items[int(index)], self.pre)

    def numel(self) -> int:
        return 0  # nothing is held

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.pre.input_size)


def loader_workers(dataset) -> int:
    """DataLoader workers for ``dataset``: streamed images are decoded by up to 4 processes, others by none."""
    decoded = getattr(getattr(dataset, "dataset", dataset), "decoded", None)  # through a Subset too
    if decoded is None or not isinstance(decoded.images, LazyImages | Streamed):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def load_item(item: Item, pre: Preprocessing) -> torch.Tensor:
    """One item (a file or an in-memory array) as (C, H, W) uint8 at the preprocessing's size.

    Raises :class:`ImageReadError` for a file that cannot be used.
    """
    mode = pre.image_mode
    if item.rows is not None:
        return to_uint8_tensor(item.rows.pixels(item.row, item.name, mode), pre)
    if item.path is not None:
        return to_uint8_tensor(read_pixels(item.path, mode=mode), pre)
    array = item.array
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3 and mode == "RGB")):
        pixels = torch.from_numpy(np.array(array, copy=not array.flags.writeable))  # read-only arrays are copied
        return to_uint8_tensor(pixels[None] if array.ndim == 2 else pixels.permute(2, 0, 1), pre)
    return to_uint8_tensor(Image.fromarray(array).convert(mode), pre)


def _load_or_reason(item: Item, pre: Preprocessing) -> torch.Tensor | ImageReadError:
    try:
        return load_item(item, pre)
    except ImageReadError as e:
        return e


def _disk_can_hold(folder: Path, nbytes: int) -> bool:
    try:
        return free_bytes(folder if folder.exists() else folder.parent) > nbytes * 1.1
    except OSError:
        return False


@dataclass
class Decoded:
    """Images decoded, resized and cropped once, kept as uint8."""

    images: torch.Tensor | LazyImages  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64 classes; (N, K) float 0/1 labels; (N,) float numbers
    names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    storage: str = "in memory"
    seconds: float = 0.0  # decoding's wall time
    workers: int = 1  # threads that decoded

    @property
    def nbytes(self) -> int:
        return self.images.numel()


def streamed(items: list[Item], pre: Preprocessing) -> Decoded:
    """Items kept where they are, to be streamed each epoch: shards
    (:class:`~transferkit.data.shards.StreamedShards`) or a dataset's split
    (:class:`~transferkit.data.hub_data.StreamedSplit`)."""
    from .hub_data import StreamedSplit
    from .shards import StreamedShards

    if items and items[0].rows is not None:
        images, storage = StreamedSplit(items, pre), f"streamed from {items[0].rows.name} each epoch"
    else:
        images = StreamedShards(items, pre)
        storage = f"streamed from {len(set(item.shard for item in items))} shards each epoch"
    return Decoded(images, _targets([item.label for item in items]), [item.name for item in items], storage=storage)


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
    shape = (len(items), *pre.input_size)  # (N, C, H, W)
    needed = math.prod(shape)
    budget = memory_budget() if max_memory_bytes is None else max_memory_bytes
    if needed <= budget:
        out, storage = torch.empty(shape, dtype=torch.uint8), "in memory"
    elif spill_dir is not None and _disk_can_hold(spill_dir, needed):
        out, storage = scratch_tensor(shape, torch.uint8, spill_dir), f"memory-mapped in {spill_dir}"
    else:
        out, storage = None, f"streamed from disk ({needed / 2**30:.1f} GiB decoded fit neither memory nor disk)"
    labels, names, skipped, usable = [], [], [], []
    n = 0
    started = time.perf_counter()

    def keep(item: Item, image: torch.Tensor | ImageReadError | None) -> None:
        """Record ``item``; ``image`` goes to the next row (None: it is in its row already)."""
        nonlocal n
        if isinstance(image, ImageReadError):
            skipped.append((item.name, str(image)))
            return
        usable.append(item)
        labels.append(item.label)
        names.append(item.name)
        if out is not None and image is not None:  # streamed images are only checked now
            out[n] = image
            n += 1

    in_order = _in_order_decoder(items)
    if in_order is not None:
        workers, n = _decode_in_place(items, pre, out, keep, in_order)
    else:
        # threads pay off for files (decoding releases the GIL), not for the small arrays of built-in sets
        workers = decode_workers() if any(item.array is None for item in items) else 1
        with ThreadPoolExecutor(workers) as pool:
            loaded = pool.map if workers > 1 else map
            for item, image in zip(items, loaded(lambda it: _load_or_reason(it, pre), items)):  # in order
                keep(item, image)
    seconds = time.perf_counter() - started
    if out is None:
        return Decoded(LazyImages(usable, pre), _targets(labels), names, skipped, storage, seconds, workers)
    images = out if n == len(items) else out[:n]
    if n < len(items) and storage == "in memory":
        images = images.clone()  # release the unused rows
    return Decoded(images, _targets(labels), names, skipped, storage, seconds, workers)


def _in_order_decoder(items: list[Item]):
    """For items that are read by going through their source rather than one by one: tar shards
    (:func:`~transferkit.data.shards.decode_shards`) or a streamed split
    (:func:`~transferkit.data.hub_data.decode_stream`); None for the others."""
    from .hub_data import StreamedRows, decode_stream
    from .shards import decode_shards

    if items and all(item.shard is not None for item in items):
        return decode_shards
    if items and isinstance(items[0].rows, StreamedRows):
        return decode_stream
    return None


def _decode_in_place(items: list[Item], pre: Preprocessing, out: torch.Tensor | None, keep, decoder) -> tuple[int, int]:
    """Items decoded by ``decoder`` into their rows of ``out``, in whatever order it finishes them; then the rows
    of unusable images are closed up, in place, so that ``out[:n]`` holds the usable ones in ``items``' order.
    Returns (workers, n)."""
    reasons: dict[int, str] = {}

    def put(index: int, image: torch.Tensor | str) -> None:
        if isinstance(image, str):
            reasons[index] = image
        elif out is not None:
            out[index] = image

    workers = decoder(items, pre, decode_workers(), put)  # puts every item: its image, or why there is none
    n = 0
    for index, item in enumerate(items):
        if index in reasons:
            keep(item, ImageReadError(reasons[index]))
            continue
        if out is not None and n != index:
            out[n] = out[index]  # n < index: a row already read
        keep(item, None)
        n += 1
    return workers, n


def _targets(labels: list) -> torch.Tensor:
    """Class indices as int64; 0/1 tuples (several labels) and numbers as float32."""
    exact = all(isinstance(label, int) for label in labels)
    return torch.tensor(labels, dtype=torch.long if exact else torch.float32)


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
