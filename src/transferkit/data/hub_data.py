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

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from .._text import first_line, printable
from ..errors import DataError, ImageReadError
from ..offline import offline
from .hub_columns import Labels, classes_of, find_image_column, find_label_column
from .images import pixels_of_bytes, read_pixels
from .items import SHUFFLE_BUFFER, SPLIT_FOLDERS, DataSource, Item, Streamed

__all__ = ["HfOptions", "HubRows", "Labels", "StreamedRows", "StreamedSplit", "decode_stream", "is_hf_data", "open_hf"]

_FILES = (".parquet", ".arrow")
_SAVED = ("dataset_dict.json", "state.json")  # what save_to_disk writes
_METADATA = ("metadata.csv", "metadata.jsonl")
LISTING_BLOCK = 2**16  # bytes read at a time when a streamed parquet dataset's labels are listed


@dataclass(frozen=True)
class HfOptions:
    """Which dataset of a Hub repository, and where its images and labels are."""

    config: str | None = None  # the dataset's configuration (subset) name
    revision: str | None = None  # a branch, tag or commit of the repository
    image_column: str | None = None
    label_column: str | None = None
    streaming: bool = False  # read the splits as streams (datasets' streaming=True), not into datasets' cache


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


def _load(spec: str, options: HfOptions, **extra) -> dict:
    """The dataset's splits by name, each a ``datasets.Dataset`` (an ``IterableDataset`` when streaming);
    its errors as one DataError line. ``extra`` goes to ``load_dataset`` (``columns`` of parquet)."""
    datasets = _datasets()
    datasets.config.HF_HUB_OFFLINE = offline()  # read at import; --offline may be given after that
    if datasets.config.PYARROW_VERSION.major > 24:
        # datasets sleeps 5 s whenever a parquet stream is left before its end, for a pyarrow bug
        # (apache/arrow#45214) that its own code treats as fixed after pyarrow 24: each streamed epoch ends so
        datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    path = Path(spec)
    streaming = options.streaming
    try:
        if spec.startswith("hf:"):
            name = spec[3:].strip("/")
            if name.count("/") > 1 or not name:
                raise DataError(f"'{spec}' is not a dataset on the Hub; give hf:ORG/NAME (or hf:NAME).")
            loaded = datasets.load_dataset(
                name, options.config, revision=options.revision, streaming=streaming, **extra
            )
        elif path.is_file():
            builder = path.suffix.lower()[1:]
            loaded = datasets.load_dataset(builder, data_files={"train": str(path)}, streaming=streaming, **extra)
        elif any((path / s).is_file() for s in _SAVED):
            loaded = datasets.load_from_disk(str(path))
            if streaming:  # memory-mapped already: read in order all the same
                splits = {"train": loaded} if isinstance(loaded, datasets.Dataset) else loaded
                loaded = {k: v.to_iterable_dataset(num_shards=min(len(v), 64) or 1) for k, v in splits.items()}
        else:
            loaded = datasets.load_dataset(str(path), options.config, streaming=streaming, **extra)
    except DataError:
        raise
    except Exception as e:  # datasets raises many kinds (not found, offline, bad config, bad files): say which
        raise DataError(f"Data '{spec}' cannot be loaded by datasets: {_first_line(e)}") from None
    if isinstance(loaded, datasets.Dataset | datasets.IterableDataset):
        return {"train": loaded}
    return dict(loaded)


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    line = printable(first_line(error))
    if "configuration" in line.lower() or "config name" in line.lower():
        line += "; name one with --hf-config"
    elif offline() and (isinstance(error, ConnectionError) or "offline" in text.lower() or "cache" in text.lower()):
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

    def pixels(self, index: int, name: str, mode: str) -> torch.Tensor:
        """Row ``index``'s image as (C, H, W) uint8; :class:`ImageReadError` when it cannot be used."""
        return _pixels(stored_image(self.rows[index][self.column], name, self.root), name, mode)

    def image_bytes(self, index: int, name: str) -> bytes:
        """Row ``index``'s image file as it is stored."""
        image = stored_image(self.rows[index][self.column], name, self.root)
        if not isinstance(image, Path):
            return image
        try:
            return image.read_bytes()
        except OSError as e:
            raise ImageReadError(f"Image '{name}' cannot be read: {e.strerror}.") from None


def stored_image(value: dict | bytes | None, name: str, root: Path | None) -> bytes | Path:
    """The file bytes an image cell holds, or the path of a file inside ``root`` (DATA's folder) that it names."""
    if isinstance(value, bytes):
        return value
    if value is None:
        raise ImageReadError(f"Image '{name}' is missing (the row's image is empty).")
    if value.get("bytes"):
        return value["bytes"]
    stored = value.get("path")
    if stored and root is not None and Path(stored).resolve().is_relative_to(root.resolve()):
        return Path(stored)
    where = f"only a path, '{printable(stored)}', outside DATA's folder" if stored else "no bytes"
    raise ImageReadError(f"Image '{name}' has {where}; it is not read.")


def _pixels(image: bytes | Path, name: str, mode: str) -> torch.Tensor:
    return read_pixels(image, mode=mode) if isinstance(image, Path) else pixels_of_bytes(image, name, mode=mode)


class StreamedRows:
    """One split of a dataset opened with ``streaming=True``: its rows are read in order, never by index.

    Its validation images are decoded once by :func:`decode_stream`; its training images are read anew
    each epoch by :class:`StreamedSplit`.
    """

    def __init__(self, split, column: str, label_column: str, labels: Labels, name: str, root: Path | None, key: str):
        from datasets import Image

        self.stream = split.select_columns([column, label_column]).cast_column(column, Image(decode=False))
        self.column, self.label_column, self.labels = column, label_column, labels
        self.name, self.root = name, root
        self.fingerprint = key  # a stream has no content fingerprint: the dataset, configuration and revision

    def rows(self, stream=None) -> Iterator[tuple[bytes | Path | ImageReadError, object]]:
        """(the stored image or why there is none, the row's label) of every row, in order."""
        for index, row in enumerate(self.stream if stream is None else stream):
            name = f"{self.name}[{index}]"
            try:
                image = stored_image(row[self.column], name, self.root)
            except ImageReadError as e:
                image = e
            yield image, row[self.label_column]


def decode_stream(items: list[Item], pre, workers: int, put: Callable[[int, torch.Tensor | str], None]) -> int:
    """Decode streamed items (of one split) by reading the stream once, in order, with ``workers`` threads;
    ``put(position in items, image or why there is none)`` for every item. Returns the threads used."""
    from .preprocess import to_uint8_tensor

    rows: StreamedRows = items[0].rows
    wanted = {item.row: place for place, item in enumerate(items)}
    mode = pre.image_mode

    def one(job: tuple[int, bytes | Path | ImageReadError]) -> tuple[int, torch.Tensor | str]:
        place, image = job
        if isinstance(image, ImageReadError):
            return place, str(image)
        try:
            return place, to_uint8_tensor(_pixels(image, items[place].name, mode), pre)
        except ImageReadError as e:
            return place, str(e)

    last = max(wanted)
    with ThreadPoolExecutor(workers) as pool:
        jobs = []
        for index, (image, _) in enumerate(rows.rows()):
            if index in wanted:
                jobs.append((wanted[index], image))
            if len(jobs) == 64 or (index == last and jobs):
                for place, result in pool.map(one, jobs):  # in order: at most 64 images held
                    put(place, result)
                jobs = []
            if index == last:
                break
    return workers


class StreamedSplit(Streamed):
    """The training rows of a streamed split, read anew each epoch (``stream``): see :meth:`epoch_loader`."""

    def __init__(self, items: list[Item], pre):
        super().__init__(len(items), pre)
        self.rows: StreamedRows = items[0].rows

    def epoch_loader(self, transform, *, batches: int, batch_size: int, seed: int, workers: int):
        """``batches`` batches of (uint8 images, labels) from the split, shuffled by ``seed``.

        datasets shuffles the order of the split's files and the rows in a buffer of ``SHUFFLE_BUFFER``,
        gives each process of a torchrun job its files (or every N-th row, when fewer files than processes),
        and each loader worker its files; the split repeats, so that every process runs the same number of
        steps. A row without a label or with an image that cannot be read is left out as it comes.
        """
        import torch.distributed as dist
        from datasets.distributed import split_dataset_by_node

        stream = self.rows.stream.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER).repeat(None)
        if dist.is_available() and dist.is_initialized():
            stream = split_dataset_by_node(stream, rank=dist.get_rank(), world_size=dist.get_world_size())
        workers = min(workers, stream.num_shards)  # datasets stops the workers it has no file for
        rows = _TrainingRows(self.rows, stream, self.pre, transform, batches=batches, batch_size=batch_size)
        return _Epoch(torch.utils.data.DataLoader(rows, batch_size=batch_size, num_workers=workers), batches)


class _TrainingRows(torch.utils.data.IterableDataset):
    """(image, label) of the usable rows of a stream, augmented by ``transform``: each loader worker yields its
    share of ``batches`` batches and ends, so that the epoch ends without waiting on workers to be stopped."""

    def __init__(self, rows: StreamedRows, stream, pre, transform, *, batches: int, batch_size: int):
        self.rows, self.stream, self.pre, self.transform = rows, stream, pre, transform
        self.batches, self.batch_size = batches, batch_size

    def __iter__(self):
        from .preprocess import to_uint8_tensor

        worker = torch.utils.data.get_worker_info()
        workers, index = (1, 0) if worker is None else (worker.num_workers, worker.id)
        # the loader takes a batch from each worker in turn: worker i gives batches i, i + workers, ...
        wanted = len(range(index, self.batches, workers)) * self.batch_size
        mode = self.pre.image_mode
        for image, value in self.rows.rows(self.stream):
            if wanted == 0:
                return
            label = self.rows.labels(value)
            if label is None or isinstance(image, ImageReadError):
                continue
            try:
                pixels = to_uint8_tensor(_pixels(image, self.rows.name, mode), self.pre)
            except ImageReadError:
                continue
            wanted -= 1
            target = torch.tensor(label, dtype=torch.long if isinstance(label, int) else torch.float32)
            yield (self.transform(pixels) if self.transform is not None else pixels), target


class _Epoch:
    """A loader that yields ``batches`` batches: one epoch of a stream."""

    def __init__(self, loader, batches: int):
        self.loader, self.batches = loader, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        return iter(self.loader)


def open_hf(spec: str, options: HfOptions | None = None, task: str = "classification") -> DataSource:
    """List the images and labels of a Hugging Face dataset (see the module's documentation); nothing is decoded."""
    options = options or HfOptions()
    splits = _load(spec, options)
    ours, unused = _our_splits(spec, splits)
    first = splits[ours["train"]]
    features = first.features if first.features is not None else first._resolve_features().features
    image_column = find_image_column(spec, features, options.image_column)
    label_column = find_label_column(spec, features, options.label_column, task)
    values = _label_values(spec, options, splits, ours, label_column)
    names, labels = classes_of(spec, features[label_column], label_column, values["train"], task)
    root = None if spec.startswith("hf:") else (Path(spec) if Path(spec).is_dir() else Path(spec).parent)
    shown = spec if spec.startswith("hf:") else printable(Path(spec).name)
    items: dict[str, list[Item]] = {}
    skipped: list[tuple[str, str]] = []
    for split, name in ours.items():
        if options.streaming:
            key = f"{spec}|{options.config}|{options.revision}|{name}"
            rows = StreamedRows(splits[name], image_column, label_column, labels, f"{shown} {name}", root, key)
        else:
            rows = HubRows(splits[name], image_column, name, root)
        kept, unlabelled = [], []
        for index, value in enumerate(values[split]):
            item_name = f"{shown} {name}[{index}]"
            try:
                label = labels(value)
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
    if options.streaming and "val" not in items:
        raise DataError(
            f"stream reads a dataset's splits as they are, and '{spec}' has no validation split "
            f"(its splits: {', '.join(splits)}); train without --stream to split one off by seed.",
            argument="stream",
        )
    folders = {split: f"split {name}" for split, name in ours.items() if split in items}
    if unused:
        folders["unused"] = ", ".join(unused)
    return DataSource(spec, names, items["train"], items.get("val"), skipped, items.get("test"), folders)


def _label_values(spec: str, options: HfOptions, splits: dict, ours: dict[str, str], column: str) -> dict[str, list]:
    """Each split's label column as Python values: through Arrow, or by reading the streams once (only that
    column of a parquet dataset, so that listing a remote dataset does not download its images)."""
    if not options.streaming:
        return {
            split: splits[name].select_columns([column]).with_format("arrow")[:].column(column).to_pylist()
            for split, name in ours.items()
        }
    if splits[ours["train"]].info.builder_name == "parquet":
        # Small reads: fsspec's 5 MB blocks fetch the images around each row group's labels (of 18 MiB of
        # 256 px JPEGs in row groups of 100, 17.6% fetched against 91.7%: bench/hub_stream.py)
        small = {"storage_options": {"hf": {"block_size": LISTING_BLOCK}}} if spec.startswith("hf:") else {}
        splits = _load(spec, options, columns=[column], **small)
    values = {}
    for split, name in ours.items():
        values[split] = []
        for batch in splits[name].select_columns([column]).iter(batch_size=1024):
            values[split].extend(batch[column])
    return values


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
