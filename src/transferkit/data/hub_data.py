"""DATA from Hugging Face datasets, read through the ``datasets`` library and its cache.

DATA is one of:

* ``hf:ORG/NAME``: a dataset repository on the Hub (``--hf-config``, ``--hf-revision``), downloaded
  once into datasets' cache (``HF_HOME``); with ``--offline`` (``HF_HUB_OFFLINE=1``) read from
  that cache only;
* a ``.parquet`` or ``.arrow`` file (all of it training data), or a folder of them whose file names
  say the split (``train-00000-of-00002.parquet``, ``data/validation-*.parquet``), as the Hub
  stores datasets;
* a folder written by datasets' ``save_to_disk``;
* an ``imagefolder`` with ``metadata.csv`` or ``metadata.jsonl`` (a ``file_name`` column and the
  labels), at its root or in each split's folder.

The dataset's own splits become the run's: ``train``, ``validation`` (or ``valid``, ``val``,
``dev``) and ``test``; other splits are left out and named. The image column is the one of
datasets' ``Image`` type, the label column the one ``ClassLabel``, whose names are the classes;
``--image-column`` and ``--label-column`` name them where there are several or none. Labels may
also be strings (classes in sorted order), lists of either (several labels, ``--task
multi-label``) or numbers (``--task regression``).

Images are kept as the file bytes the dataset holds and decoded by transferkit's own reader
(:mod:`transferkit.data.images`), so that unreadable ones are skipped and listed as for files. A
row whose image is only a path is read only when the path lies inside DATA's folder; datasets of
version 4 and later run no loading scripts, so nothing in a dataset runs code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .._text import printable
from ..errors import DataError, ImageReadError
from ..tasks.targets import LABEL_COLUMNS, MULTI_COLUMNS, TARGET_COLUMNS
from .images import pixels_of_bytes, read_pixels
from .sources import SPLIT_FOLDERS, DataSource, Item

__all__ = ["HfOptions", "HubRows", "is_hf_data", "open_hf"]

_FILES = (".parquet", ".arrow")
_SAVED = ("dataset_dict.json", "state.json")  # what save_to_disk writes
_METADATA = ("metadata.csv", "metadata.jsonl")


@dataclass(frozen=True)
class HfOptions:
    """Which dataset of a Hub repository, and where its images and labels are."""

    config: str | None = None  # the dataset's configuration (subset) name
    revision: str | None = None  # a branch, tag or commit of the repository
    image_column: str | None = None
    label_column: str | None = None


def is_hf_data(spec: str) -> bool:
    """Whether DATA ``spec`` is read through ``datasets``: ``hf:``, a parquet or arrow file, or a folder
    that holds them, a saved dataset or an imagefolder's metadata."""
    if spec.startswith("hf:"):
        return True
    path = Path(spec)
    if path.is_file():
        return path.suffix.lower() in _FILES
    if not path.is_dir():
        return False
    try:
        names = {p.name for p in path.iterdir()}
        if names & {*_SAVED, *_METADATA} or any(Path(n).suffix.lower() in _FILES for n in names):
            return True
        return any(
            (path / d / m).is_file() for d in names for m in (*_METADATA, *_SAVED) if (path / d).is_dir()
        ) or any(p.suffix.lower() in _FILES for p in (path / "data").glob("*"))
    except OSError:
        return False


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(
            "Hugging Face datasets as DATA need the datasets library: pip install 'transferkit[hf]'."
        ) from None
    return datasets


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _load(spec: str, options: HfOptions) -> dict:
    """The dataset's splits by name, each a ``datasets.Dataset``; its errors as one DataError line."""
    datasets = _datasets()
    datasets.config.HF_HUB_OFFLINE = _offline()  # read at import; --offline may be given after that
    path = Path(spec)
    try:
        if spec.startswith("hf:"):
            name = spec[3:].strip("/")
            if name.count("/") > 1 or not name:
                raise DataError(f"'{spec}' is not a dataset on the Hub; give hf:ORG/NAME (or hf:NAME).")
            loaded = datasets.load_dataset(name, options.config, revision=options.revision)
        elif path.is_file():
            loaded = datasets.load_dataset(path.suffix.lower()[1:], data_files={"train": str(path)})
        elif any((path / s).is_file() for s in _SAVED):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(path), options.config)
    except DataError:
        raise
    except Exception as e:  # datasets raises many kinds (not found, offline, bad config, bad files): say which
        raise DataError(f"Data '{spec}' cannot be loaded by datasets: {_first_line(e)}") from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    line = printable(text.splitlines()[0])[:300]
    if "configuration" in line.lower() or "config name" in line.lower():
        line += "; name one with --hf-config"
    elif _offline() and (isinstance(error, ConnectionError) or "offline" in text.lower() or "cache" in text.lower()):
        line += " (offline: run once with network to fill datasets' cache)"
    return line


class HubRows:
    """The images of one split of a dataset, read by row as the file bytes it holds (not decoded by datasets).

    Pickles by reference to datasets' cache files, for DataLoader workers.
    """

    def __init__(self, split, column: str, name: str, root: Path | None):
        from datasets import Image

        self.rows = split.select_columns([column]).cast_column(column, Image(decode=False))
        self.column, self.name, self.root = column, name, root
        self.fingerprint = split._fingerprint

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self, index: int, name: str, mode: str) -> torch.Tensor:
        """Row ``index``'s image as (C, H, W) uint8; :class:`ImageReadError` when it cannot be used."""
        image = self._image(index, name)
        return read_pixels(image, mode=mode) if isinstance(image, Path) else pixels_of_bytes(image, name, mode=mode)

    def image_bytes(self, index: int, name: str) -> bytes:
        """Row ``index``'s image file as it is stored."""
        image = self._image(index, name)
        if not isinstance(image, Path):
            return image
        try:
            return image.read_bytes()
        except OSError as e:
            raise ImageReadError(f"Image '{name}' cannot be read: {e.strerror}.") from None

    def _image(self, index: int, name: str) -> bytes | Path:
        value = self.rows[index][self.column]
        if value is None:
            raise ImageReadError(f"Image '{name}' is missing (the row's image is empty).")
        if value.get("bytes"):
            return value["bytes"]
        stored = value.get("path")
        if stored and self.root is not None and Path(stored).resolve().is_relative_to(self.root.resolve()):
            return Path(stored)
        where = f"only a path, '{printable(stored)}', outside DATA's folder" if stored else "no bytes"
        raise ImageReadError(f"Image '{name}' has {where}; it is not read.")


def open_hf(spec: str, options: HfOptions | None = None, task: str = "classification") -> DataSource:
    """List the images and labels of a Hugging Face dataset (see the module's documentation); nothing is decoded."""
    options = options or HfOptions()
    splits = _load(spec, options)
    ours, unused = _our_splits(spec, splits)
    first = splits[ours["train"]]
    image_column = _image_column(spec, first.features, options.image_column)
    label_column = _label_column(spec, first.features, options.label_column, task)
    labels = {split: _values(splits[name], label_column) for split, name in ours.items()}
    feature = first.features[label_column]
    names, convert = _classes(spec, feature, label_column, labels["train"], task)
    root = None if spec.startswith("hf:") else (Path(spec) if Path(spec).is_dir() else Path(spec).parent)
    shown = spec if spec.startswith("hf:") else printable(Path(spec).name)
    items: dict[str, list[Item]] = {}
    skipped: list[tuple[str, str]] = []
    for split, name in ours.items():
        rows = HubRows(splits[name], image_column, name, root)
        kept, unlabelled = [], []
        for index, value in enumerate(labels[split]):
            item_name = f"{shown} {name}[{index}]"
            try:
                label = convert(value)
            except DataError as e:
                raise DataError(f"Data '{spec}' split {name} row {index}: {e}") from None
            if label is None:
                unlabelled.append((item_name, f"no label ({label_column} is empty)"))
            else:
                kept.append(Item(item_name, label, rows=rows, row=index))
        if kept or split == "train":
            items[split] = kept
            skipped += unlabelled
        else:  # a split without labels, such as a competition's hidden test split
            unused.append(f"{name} (no labels)")
    if not items["train"]:
        raise DataError(f"Data '{spec}' split {ours['train']} has no labelled rows.")
    folders = {split: f"split {name}" for split, name in ours.items() if split in items}
    if unused:
        folders["unused"] = ", ".join(unused)
    return DataSource(spec, names, items["train"], items.get("val"), skipped, items.get("test"), folders)


def _our_splits(spec: str, splits: dict) -> tuple[dict[str, str], list[str]]:
    """transferkit's split -> the dataset's split name, and the dataset's splits left out."""
    ours, unused = {}, []
    for name in splits:
        split = next((s for s, names in SPLIT_FOLDERS.items() if name.lower() in names), None)
        if split is None or split in ours:
            unused.append(name)
        else:
            ours[split] = name
    if "train" not in ours:
        raise DataError(
            f"Data '{spec}' has no train split (its splits: {', '.join(splits) or 'none'}); "
            "transferkit trains on a split named train."
        )
    return ours, unused


def _image_column(spec: str, features, named: str | None) -> str:
    columns = ", ".join(features)
    if named is not None:
        if named not in features:
            raise DataError(f"Data '{spec}' has no column '{named}' (--image-column); its columns: {columns}.")
        if not _holds_images(features[named]):
            raise DataError(f"Data '{spec}' column '{named}' holds {_kind(features[named])}, not images.")
        return named
    found = [name for name, feature in features.items() if _holds_images(feature)]
    if len(found) != 1:
        which = f"several image columns ({', '.join(found)})" if found else f"no image column (columns: {columns})"
        raise DataError(f"Data '{spec}' has {which}; name the one to use with --image-column.")
    return found[0]


def _holds_images(feature) -> bool:
    """datasets' Image, or what it stores one as (the file's bytes and path, or bytes) in parquet from other tools."""
    from datasets import Image, Value

    if isinstance(feature, dict):
        return set(feature) == {"bytes", "path"}
    return isinstance(feature, Image) or (isinstance(feature, Value) and feature.dtype in ("binary", "large_binary"))


def _label_column(spec: str, features, named: str | None, task: str) -> str:
    from datasets import ClassLabel

    columns = ", ".join(features)
    if named is not None:
        if named not in features:
            raise DataError(f"Data '{spec}' has no column '{named}' (--label-column); its columns: {columns}.")
        return named
    if task != "regression":
        found = [n for n, f in features.items() if isinstance(_inner(f) if task == "multi-label" else f, ClassLabel)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(
                f"Data '{spec}' has several class columns ({', '.join(found)}); name one with --label-column."
            )
        lists = [n for n, f in features.items() if isinstance(_inner(f), ClassLabel)]
        if task == "classification" and lists:
            raise DataError(f"Data '{spec}' column '{lists[0]}' holds lists of classes: train with --task multi-label.")
    usual = {"classification": LABEL_COLUMNS, "multi-label": MULTI_COLUMNS, "regression": TARGET_COLUMNS}[task]
    found = next((n for u in (*usual, *LABEL_COLUMNS) for n in features if n.lower() == u), None)
    if found is None:
        raise DataError(f"Data '{spec}' has no label column (columns: {columns}); name it with --label-column.")
    return found


def _values(split, column: str) -> list:
    """A column's values as Python objects, read through Arrow (not row by row)."""
    return split.select_columns([column]).with_format("arrow")[:].column(column).to_pylist()


def _inner(feature):
    """The feature of a list's items, or None for a feature that is no list."""
    from datasets import LargeList, List

    return feature.feature if isinstance(feature, List | LargeList) else None


def _kind(feature) -> str:
    dtype = getattr(feature, "dtype", None)
    return dtype if isinstance(dtype, str) else type(feature).__name__


def _classes(spec: str, feature, column: str, train_values: list, task: str):
    """The class names (or the target's name) and a function from a row's value to its ``Item.label``
    (None: the row has no label)."""
    from datasets import ClassLabel, Value

    where = f"Data '{spec}' column '{column}'"
    if task == "regression":
        if not (isinstance(feature, Value) and (feature.dtype.startswith(("int", "uint", "float")))):
            raise DataError(f"{where} holds {_kind(feature)}; --task regression needs numbers.")
        return [column], lambda v: None if v is None else float(v)
    if task == "multi-label":
        inner = _inner(feature)
        if isinstance(inner, ClassLabel):
            names = list(inner.names)
            return names, lambda v: None if v is None else tuple(int(i in set(v)) for i in range(len(names)))
        if isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
            names = sorted(set().union(*(set(v) for v in train_values if v is not None)))
            return names, lambda v: None if v is None else _multi(v, names)
        raise DataError(
            f"{where} holds {_kind(feature)}; --task multi-label needs lists of classes (ClassLabel) or strings."
        )
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        return names, lambda v: None if v is None or v < 0 else int(v)  # -1: no label (e.g. a hidden test split)
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        names = sorted({v.strip() for v in train_values if v is not None and v.strip()})
        return names, lambda v: _string_class(v, names)
    if _inner(feature) is not None:
        raise DataError(f"{where} holds lists of labels: train with --task multi-label.")
    numbers = " (numbers to predict: --task regression)" if _kind(feature).startswith("float") else ""
    raise DataError(
        f"{where} holds {_kind(feature)}, not classes: labels must be a ClassLabel (which names the classes) or "
        f"strings; cast it with datasets' cast_column(ClassLabel(names=...)) or name another with --label-column"
        f"{numbers}."
    )


def _string_class(value: str | None, names: list[str]) -> int | None:
    if value is None or not value.strip():
        return None
    if value.strip() not in names:
        raise DataError(f"class '{printable(value.strip())}' has no training rows.")
    return names.index(value.strip())


def _multi(values: list[str], names: list[str]) -> tuple[int, ...]:
    unknown = [v for v in values if v not in names]
    if unknown:
        raise DataError(f"label '{printable(unknown[0])}' has no training rows.")
    return tuple(int(n in values) for n in names)
