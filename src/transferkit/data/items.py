"""What every reader of DATA shares, below them all: an image item, a source of items, the split folders'
names, and the base of images streamed each epoch.

The readers (:mod:`~transferkit.data.sources` for folders and built-in data, :mod:`~transferkit.data.csv_data`,
:mod:`~transferkit.data.shards`, :mod:`~transferkit.data.hub_data`) import these and nothing of each other;
:func:`~transferkit.data.sources.open_data` picks one, and :mod:`~transferkit.data.decode` decodes what they list.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._text import printable
from ..errors import DataError
from ..tasks.targets import task_of
from .preprocess import Preprocessing

__all__ = [
    "SHUFFLE_BUFFER",
    "SPLIT_FOLDERS",
    "DataSource",
    "Item",
    "Streamed",
    "checked",
    "decode_workers",
    "unusable",
]


SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}


@dataclass
class Item:
    """One labelled image: a file, or an array from a built-in dataset."""

    name: str
    label: int | tuple[int, ...] | float  # a class index; 0/1 per label (multi-label); a number (regression)
    path: Path | None = None
    array: np.ndarray | None = None  # (H, W) or (H, W, C) uint8
    shard: Path | None = None  # a tar shard holding the image (data.shards), as the sample of
    key: str | None = None  # this key
    rows: object | None = None  # a Hugging Face dataset's split (data.hub_data.HubRows) holding the image in
    row: int = -1  # this row


@dataclass
class DataSource:
    """The images DATA names, with a validation set when DATA has one."""

    spec: str
    class_names: list[str]
    train: list[Item]
    val: list[Item] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason): files listed but unusable
    test: list[Item] | None = None
    folders: dict[str, str] = field(default_factory=dict)  # split -> the folder it came from, e.g. {"val": "valid"}

    @property
    def task(self) -> str:
        """classification, multi-label or regression (:func:`~transferkit.tasks.targets.task_of`)."""
        return task_of(self.train[0].label) if self.train else "classification"

    def fingerprint(self) -> str:
        """Changes when any file's name, size or modification time, or any array, changes."""
        h = hashlib.sha256(printable(self.spec).encode())
        shards, datasets = set(), set()
        for item in self.train + (self.val or []):
            h.update(f"{item.name}|{item.label}".encode())
            if item.rows is not None:
                datasets.add(item.rows.fingerprint)
            elif item.shard is not None:
                shards.add(item.shard)
            elif item.path is not None:
                h.update(_file_stamp(item.path))
            else:
                h.update(item.array.tobytes())
        for shard in sorted(shards):
            h.update(_file_stamp(shard))
        for fingerprint in sorted(datasets):  # datasets' own, of the split's contents
            h.update(fingerprint.encode())
        return h.hexdigest()[:16]


def _file_stamp(path: Path) -> bytes:
    try:
        st = path.stat()
        return f"{st.st_size}|{st.st_mtime_ns}".encode()
    except OSError:
        return b"missing"


def checked(source: DataSource) -> DataSource:
    """``source``, refused where it has nothing to learn: one class, or one target value."""
    if source.task == "regression":
        if len({item.label for item in source.train}) < 2:
            raise DataError(f"Data '{source.spec}' has one target value for every training image; nothing to learn.")
        return source
    if source.task == "multi-label":
        return source
    if len(source.class_names) < 2:
        raise DataError(
            f"Data '{source.spec}' has a single class ({source.class_names[0]}); a classifier needs at least two."
        )
    return source


def unusable(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if path.is_symlink():
            return f"dangling symbolic link to '{printable(os.readlink(path))}'"
        return "file does not exist"
    if stat.S_ISDIR(mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(mode):
        return "not a regular file (FIFO, socket or device)"
    return None


SHUFFLE_BUFFER = 1000  # images each loader worker shuffles among, when streaming


class Streamed:
    """Training images read anew each epoch instead of decoded once (``stream``), standing where a run keeps its
    decoded images (:class:`Decoded`'s ``images``): tar shards or a dataset's streamed split."""

    def __init__(self, count: int, pre: Preprocessing):
        self.count, self.pre = count, pre

    def __len__(self) -> int:
        return self.count

    def numel(self) -> int:
        return 0  # nothing is held

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.pre.input_size)

    def epoch_loader(self, transform, *, batches: int, batch_size: int, seed: int, workers: int):
        """One epoch of ``batches`` batches of (uint8 images, labels), the same count on every process."""
        raise NotImplementedError


def decode_workers() -> int:
    """Threads that decode files: one per core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))
