"""WebDataset tar shards: DATA read from them (``wds:``) and written from any DATA (``transferkit shard``).

A shard set written here is a folder with a subfolder of tar shards per split (``train/000000.tar``,
... ``val/``, ``test/``), the images in a shuffled order, and ``index.json`` beside them: the task,
the class names, and each split's shards with their image counts. A sample is an image file's bytes as they were (member
``KEY.jpg``, ``KEY.png``, ...; built-in arrays as PNG) and its label: ``KEY.cls``, the class
index, as in the WebDataset convention; ``KEY.json`` for several labels (0/1 per label) or a number;
``KEY.name``, the image's name in the DATA it came from, which runs then show.

Shards from elsewhere are read too, as ``wds:PATH/{000000..000099}.tar`` (brace expansion) or a
folder of ``.tar`` files: one class per ``cls`` value, all of it training data.

Reading goes through the webdataset library. The shards are listed once (keys and labels, no
image decoded), then decoded once at the preprocessing's size like any DATA
(:func:`transferkit.data.decode.decode`): in DataLoader worker processes, the shards split among
them (``split_by_worker``). Members are taken as bytes and decoded by transferkit's own image
reader: nothing in a shard is unpickled or run, and shard names in an index are local files
inside its folder.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .._text import printable
from ..errors import DataError, ImageReadError
from .items import SHUFFLE_BUFFER, DataSource, Item, Streamed, decode_workers

__all__ = [
    "SHARD_FORMAT",
    "StreamedShards",
    "decode_shards",
    "epoch_loader",
    "is_shard_folder",
    "open_shards",
    "parse_size",
    "write_shards",
]

SHARD_FORMAT = "transferkit-shards/1"
INDEX = "index.json"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm", "pgm")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.I)


def parse_size(text: str) -> int:
    """Bytes in ``1GB``, ``500MB``, ``2GiB`` or a plain number (decimal units; ``i`` for binary ones)."""
    found = _SIZE.match(str(text))
    if not found or float(found.group(1)) <= 0:
        raise DataError(f"Shard size '{text}' is not a size such as 1GB, 500MB or 2GiB.", argument="shard_size")
    power = " KMGT".index(found.group(2).upper() or " ")
    return int(float(found.group(1)) * (1024 if found.group(3) else 1000) ** power)


def is_shard_folder(path: Path) -> bool:
    return (path / INDEX).is_file()


def _expand(pattern: str) -> list[Path]:
    _webdataset()
    import braceexpand  # webdataset's own dependency

    paths = [Path(p) for p in braceexpand.braceexpand(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"Shard '{printable(missing[0])}' of '{printable(pattern)}' does not exist"
            + (f" ({len(missing)} of {len(paths)} are missing)" if len(missing) > 1 else "")
            + "."
        )
    return paths


def open_shards(spec: str, task: str = "classification") -> DataSource:
    """List the samples of the shards ``spec`` names (``wds:FOLDER``, ``wds:PATTERN`` or a shard folder): keys and
    labels, without decoding an image. A shard that cannot be read to its end is listed as skipped, with the
    samples read before the damage kept."""
    target = spec[4:] if spec.startswith("wds:") else spec
    folder = Path(target)
    if folder.is_dir() and is_shard_folder(folder):
        index = _read_index(folder)
        if index["task"] != task:
            raise DataError(
                f"Shards '{printable(folder)}' hold {index['task']} labels; give task {index['task']}.",
                argument="task",
            )
        names, splits = index["class_names"], {}
        # what was unusable when the shards were written, then what is unreadable now
        skipped = [(printable(s["name"]), printable(s["reason"])) for s in index.get("skipped", [])]
        for split, entry in index["splits"].items():
            counts = {folder / s["file"]: s["images"] for s in entry["shards"]}
            splits[split] = sorted(_listed(list(counts), index["task"], skipped, counts), key=lambda i: i.key)
        source = DataSource(spec, names, splits["train"], splits.get("val"), skipped, splits.get("test"))
        source.folders = {split: split for split in splits}
        return source
    if task != "classification":
        raise DataError(
            f"Shards without {INDEX} hold classes ('cls'); task {task} needs shards written by transferkit shard."
        )
    if folder.is_dir():
        paths = sorted(folder.glob("*.tar"))
        if not paths:
            raise DataError(f"Folder '{printable(folder)}' holds no .tar shards and no {INDEX}.")
    else:
        paths = _expand(target)
    skipped = []
    items = _listed(paths, "classification", skipped)
    classes = sorted({item.label for item in items})
    position = {c: i for i, c in enumerate(classes)}
    for item in items:
        item.label = position[item.label]
    return DataSource(spec, [str(c) for c in classes], items, skipped=skipped)


def _read_index(folder: Path) -> dict:
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"'{printable(folder / INDEX)}' cannot be read as JSON ({e}).") from None
    if not isinstance(index, dict) or index.get("format") != SHARD_FORMAT or "train" not in index.get("splits", {}):
        raise DataError(f"'{printable(folder / INDEX)}' is not a {SHARD_FORMAT} index with a train split.")
    root = folder.resolve()
    for entry in index["splits"].values():
        for shard in entry["shards"]:
            path = (folder / str(shard["file"])).resolve()
            if root not in path.parents or path.suffix != ".tar":
                raise DataError(
                    f"'{printable(folder / INDEX)}' names a shard outside its folder or not a .tar: "
                    f"'{printable(shard['file'])}'. Shards are read only from inside the folder."
                )
            if not path.is_file():
                raise DataError(f"Shard '{printable(path)}' named in '{printable(folder / INDEX)}' does not exist.")
    return index


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise DataError("WebDataset shards need the shards extra: pip install 'transferkit[shards]'.") from None
    return webdataset


def _samples(paths: list[Path], **options):
    """The samples of ``paths`` in order, as dicts of raw bytes (nothing decoded), through webdataset."""
    return _webdataset().WebDataset(
        [str(p) for p in paths], shardshuffle=False, nodesplitter=None, empty_check=False, **options
    )


def _listed(
    paths: list[Path], task: str, skipped: list[tuple[str, str]], counts: dict[Path, int] | None = None
) -> list[Item]:
    """The labelled samples of ``paths``, listed by loader workers a shard each; the unusable ones, and shards that
    hold fewer samples than ``counts`` (the index's) or cannot be read to their end, are added to ``skipped``."""
    from torch.utils.data import DataLoader

    workers = min(decode_workers(), len(paths)) if len(paths) > 1 else 0
    loader = DataLoader(_Listing(paths, task), batch_size=None, num_workers=workers, collate_fn=_as_is)
    listed = {index: rest for index, *rest in loader}
    items = []
    for index, path in enumerate(paths):
        rows, error = listed[index]
        seen = len(rows)
        for key, label, name, has_image in rows:
            name = name if name is not None else f"{printable(path.name)}/{printable(key)}"
            if label is None:
                skipped.append((name, "no label: the sample has no 'cls' (or 'json') member"))
            elif not has_image:
                skipped.append((name, f"no image member ({', '.join(IMAGE_KEYS[:3])}, ...)"))
            else:
                items.append(Item(name, label, shard=path, key=key))
        if error is not None:  # a damaged tar: what came before it is kept
            skipped.append((printable(path), f"shard unreadable after {seen} samples: {error}"))
        elif counts is not None and seen < counts[path]:  # a truncated tar ends early, without an error
            skipped.append((printable(path), f"shard holds {seen} of the {counts[path]} images its index lists"))
    if not items:
        raise DataError(f"The shards ({printable(paths[0])}, ...) hold no usable labelled images.")
    return items


def _as_is(value):
    return value


class _Listing(torch.utils.data.IterableDataset):
    """Each loader worker reads its share of the shards (every W-th) and hands back one message per shard:
    ``(index, [(key, label, name, has image), ...], error or None)``. No image is decoded."""

    def __init__(self, paths: list[Path], task: str):
        self.paths, self.task = paths, task

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        mine = range(len(self.paths)) if worker is None else range(worker.id, len(self.paths), worker.num_workers)
        for index in mine:
            rows, error = [], None
            try:
                for sample in _samples([self.paths[index]], workersplitter=None):
                    name = printable(sample["name"].decode("utf-8", "replace")) if "name" in sample else None
                    has_image = any(k in sample for k in IMAGE_KEYS)
                    rows.append((sample["__key__"], _label(sample, self.task), name, has_image))
            except Exception as e:
                error = str(e)
            yield index, rows, error


def _label(sample: dict, task: str):
    try:
        if task == "classification":
            return int(sample["cls"].decode().strip()) if "cls" in sample else None
        if "json" not in sample:
            return None
        value = json.loads(sample["json"])
        return tuple(int(v) for v in value) if task == "multi-label" else float(value)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


def _sample_image(sample: dict, pre, mode: str) -> torch.Tensor:
    """A sample's image, decoded by transferkit's reader at the preprocessing's size; ImageReadError if it cannot be."""
    from .images import pixels_of_bytes
    from .preprocess import to_uint8_tensor

    member = next((k for k in IMAGE_KEYS if k in sample), None)
    if member is None:
        raise ImageReadError(f"Sample '{sample['__key__']}' has no image member.")
    return to_uint8_tensor(pixels_of_bytes(sample[member], f"{sample['__key__']}.{member}", mode=mode), pre)


def _decoded_sample(sample: dict, *, wanted: set, pre, mode: str):
    """(shard, key, image or reason) for a wanted sample, None for the others; run in a loader worker."""
    place = (sample["__url__"], sample["__key__"])
    if place not in wanted:
        return None
    try:
        return (*place, _sample_image(sample, pre, mode))
    except ImageReadError as e:
        return (*place, str(e))


def decode_shards(items: list[Item], pre, workers: int, put: Callable[[int, torch.Tensor | str], None]) -> int:
    """Decode the shard ``items`` at the preprocessing's size: ``put(i, image)`` for items[i], or ``put(i, reason)``.

    Their shards are read once, by up to ``workers`` DataLoader worker processes, each decoding the
    shards webdataset gives it. Returns the workers used.
    """
    from functools import partial

    from torch.utils.data import DataLoader

    positions = {(str(item.shard), item.key): i for i, item in enumerate(items)}
    paths = list(dict.fromkeys(item.shard for item in items))
    mode = pre.image_mode
    workers = max(0, min(workers, len(paths)))
    stream = (
        _samples(paths, handler=_stop_shard)
        .map(partial(_decoded_sample, wanted=set(positions), pre=pre, mode=mode))
        .select(_is_some)
        .batched(_HANDED_ON, collation_fn=_handed_on, partial=True)
    )
    found = set()
    for places, images, reasons in DataLoader(stream, batch_size=None, num_workers=workers):
        for pair, image in zip(places, images if len(images) else [None] * len(places)):
            place = tuple(pair)  # the loader hands pairs on as lists
            found.add(place)
            put(positions[place], reasons.get(place, image))
    for place in set(positions) - found:
        put(positions[place], "not found in its shard on reading again (the shard changed)")
    return max(workers, 1)


def _is_some(value) -> bool:  # a function, not a lambda: loader workers may be started by pickling the pipeline
    return value is not None


_HANDED_ON = 64  # images a worker hands back at once: one transfer between processes per batch, not per image


def _handed_on(results: list) -> tuple[list, torch.Tensor, dict]:
    """A worker's decoded samples as (places, their images stacked, the reasons of those that failed).

    A failed sample's row holds zeros; ``reasons`` names it.
    """
    places = [(url, key) for url, key, _ in results]
    reasons = {(url, key): image for url, key, image in results if isinstance(image, str)}
    shape = next((image.shape for *_, image in results if not isinstance(image, str)), None)
    if shape is None:
        return places, torch.empty(0), reasons
    blank = torch.zeros(shape, dtype=torch.uint8)
    return places, torch.stack([blank if isinstance(image, str) else image for *_, image in results]), reasons


def _stop_shard(error: Exception) -> bool:
    """webdataset's error handler while decoding: a damaged shard was listed as such; go on with the next."""
    return True


class StreamedShards(Streamed):
    """The training images of shard items, read anew each epoch instead of decoded once (``stream``):
    :meth:`epoch_loader`."""

    def __init__(self, items: list[Item], pre):
        super().__init__(len(items), pre)
        self.paths = list(dict.fromkeys(item.shard for item in items))
        self.labels = {(str(item.shard), item.key): item.label for item in items}

    def epoch_loader(self, transform, *, batches: int, batch_size: int, seed: int, workers: int):
        return epoch_loader(self, transform, batches=batches, batch_size=batch_size, seed=seed, workers=workers)


def epoch_loader(images: StreamedShards, transform, *, batches: int, batch_size: int, seed: int, workers: int):
    """One epoch of ``batches`` batches of (uint8 images, labels), streamed from the shards.

    Each process of a torchrun job and each of its loader workers draws shards with replacement
    (webdataset's ``ResampledShards``) from its own seed, derived from ``seed``, its rank and its worker
    number: every process runs the same number of steps whatever the shard sizes, and an epoch is
    reproducible. Each worker shuffles its images in a buffer of ``SHUFFLE_BUFFER``. An image that
    cannot be decoded is left out as it comes.
    """
    from functools import partial

    wds = _webdataset()
    mode = images.pre.image_mode
    pipeline = wds.DataPipeline(
        wds.ResampledShards([str(p) for p in images.paths], seed=seed, deterministic=True),
        wds.tarfile_to_samples(handler=_stop_shard),
        wds.map(partial(_training_sample, labels=images.labels, pre=images.pre, mode=mode, transform=transform)),
        wds.select(_is_some),
        wds.shuffle(SHUFFLE_BUFFER, seed=seed),
        wds.batched(batch_size, partial=False),
    )
    return wds.WebLoader(pipeline, batch_size=None, num_workers=workers).with_epoch(batches)


def _training_sample(sample: dict, *, labels: dict, pre, mode: str, transform):
    """(image, label) of a training sample, augmented; None for one outside training or that cannot be read."""
    place = (sample["__url__"], sample["__key__"])
    if place not in labels:
        return None
    try:
        image = _sample_image(sample, pre, mode)
    except ImageReadError:
        return None
    label = labels[place]
    target = torch.tensor(label, dtype=torch.long if isinstance(label, int) else torch.float32)
    return (transform(image) if transform is not None else image), target


def write_shards(source: DataSource, out: Path, *, shard_size: int, log: Callable[[str], None] = print) -> dict:
    """Write ``source`` as tar shards of at most ``shard_size`` bytes per split, with ``index.json``; returns it.

    Image files go in as they are, after a check that they decode; unusable ones are skipped and
    listed in the index. The folder appears whole or not at all (written beside it, then renamed).
    """
    from .images import pixels_of_bytes

    wds = _webdataset()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"'{printable(out)}' already exists and is not empty; give a new folder.", argument="out")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    splits = {"train": source.train, "val": source.val, "test": source.test}
    index = {
        "format": SHARD_FORMAT,
        "source": printable(source.spec),
        "task": source.task,
        "class_names": source.class_names,
        "splits": {},
        "skipped": [{"name": n, "reason": r} for n, r in source.skipped],
    }
    try:
        for split, items in splits.items():
            if not items:
                continue
            (partial_dir / split).mkdir()
            counts: dict[str, int] = {}
            with wds.ShardWriter(str(partial_dir / split / "%06d.tar"), maxsize=shard_size, verbose=0) as sink:
                # In a seeded shuffled order, so that a shard mixes the classes for a stream's shuffle buffer; the key
                # is the image's place in DATA, in which order a run that decodes the shards once lists them.
                for number in random.Random(0).sample(range(len(items)), len(items)):
                    item = items[number]
                    try:
                        member, data = _file_bytes(item)
                        pixels_of_bytes(data, item.name)
                    except ImageReadError as e:
                        index["skipped"].append({"name": item.name, "reason": str(e)})
                        continue
                    name = item.name.encode("utf-8", "backslashreplace")
                    sample = {"__key__": f"{number:09d}", member: data, "name": name}
                    sample.update(_label_member(item.label, source.task))
                    sink.write(sample)
                    counts[Path(sink.fname).name] = counts.get(Path(sink.fname).name, 0) + 1
            shards = [{"file": f"{split}/{name}", "images": n} for name, n in sorted(counts.items())]
            index["splits"][split] = {"shards": shards, "images": sum(counts.values())}
            log(f"{split}: {sum(counts.values())} images in {len(shards)} shards")
        if "train" not in index["splits"]:
            raise DataError(f"'{printable(source.spec)}' has no usable training image to write.")
        (partial_dir / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
        os.replace(partial_dir, out)  # over an empty folder too
    except BaseException:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise
    return index


def _file_bytes(item: Item) -> tuple[str, bytes]:
    """The image member's extension (from the file's format) and bytes: a file's or dataset row's own, a built-in
    array's as PNG."""
    import io

    from PIL import Image

    if item.array is not None:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(item.array)).save(buffer, format="PNG")
        return "png", buffer.getvalue()
    if item.rows is not None:
        data = item.rows.image_bytes(item.row, item.name)
    else:
        try:
            data = item.path.read_bytes()
        except OSError as e:
            raise ImageReadError(f"Image '{item.name}' cannot be read: {e.strerror}.") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = (img.format or "").lower()
    except Exception:  # the decoding check that follows says why, in the reader's words
        kind = ""
    member = {"jpeg": "jpg", "mpo": "jpg", "tif": "tiff"}.get(kind, kind)
    return (member if member in IMAGE_KEYS else "png"), data


def _label_member(label, task: str) -> dict:
    if task == "classification":
        return {"cls": str(int(label)).encode()}
    return {"json": json.dumps(list(label) if task == "multi-label" else float(label)).encode()}
