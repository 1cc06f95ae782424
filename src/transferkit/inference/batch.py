"""Batch prediction: every image of a folder, a CSV of paths, a list of files or a dataset (``hf:``, parquet,
``wds:`` shards, builtin) into one CSV, JSONL or Parquet file.

Loader workers decode the next images while the model runs on a batch. The rows are written a part at a time
(``OUT.parts/``, each part complete before it counts), so that ``resume`` goes on where an interrupted
prediction stopped; the final file is written at once when every part is done, and is the same as an
uninterrupted prediction's (the parts are the same batches either way). A file that cannot be read as an image
is a row whose ``error`` says why, not a row left out. Where a CSV gives each image's label, the accuracy is
counted as ``eval`` counts it: the top class against the label.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.csv_data import read_table
from ..data.decode import load_item
from ..data.hub_data import is_hf_data
from ..data.items import Item, decode_workers
from ..data.shards import decode_shards, is_shard_folder
from ..data.sources import files_under, open_data, printable
from ..errors import DataError, ImageReadError, RunError
from ..progress import progress
from ..serialization import atomic_path, write_json, write_text
from .predict import Predictor

__all__ = ["FORMATS", "PART", "PredictionFile", "names_many", "predict_to_file", "prediction_workers"]

FORMATS = (".csv", ".jsonl", ".parquet")
PART = 1024  # images a part holds: what an interrupted prediction loses at most


@dataclass
class PredictionFile:
    """What :func:`predict_to_file` wrote: the file, how many images, how many unreadable, the speed, accuracy."""

    out: Path
    images: int
    unreadable: int
    seconds: float
    resumed: int = 0  # images already predicted by an interrupted run
    accuracy: float | None = None  # where the data gave labels

    def __repr__(self) -> str:
        speed = (self.images - self.resumed) / max(self.seconds, 1e-9)
        text = f"{self.images} images predicted into {self.out} ({speed:.0f} images/s"
        text += f", {self.resumed} from an earlier run)" if self.resumed else ")"
        text += f", {self.unreadable} unreadable" if self.unreadable else ""
        return text + (f"; accuracy {self.accuracy:.2%}" if self.accuracy is not None else "")


def predict_to_file(
    predictor: Predictor,
    data: str | Path | list,
    out: str | Path,
    *,
    top_k: int = 5,
    resume: bool = False,
    workers: int | None = None,
    part: int = PART,
    log=print,
) -> PredictionFile:
    """Predict every image ``data`` names (a folder, recursively; a CSV with a ``path`` column and an optional
    ``label``; a list of files; or a dataset: ``hf:NAME``, a parquet file, ``wds:SHARDS``, ``builtin:NAME``, its
    classes as the labels) and write one row per image to ``out`` (``.csv``, ``.jsonl`` or ``.parquet``).

    ``resume`` continues a prediction into the same ``out`` that was interrupted, from its last complete part.
    ``workers`` processes decode images ahead (default: :func:`prediction_workers`).
    """
    workers = prediction_workers() if workers is None else workers
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise DataError(f"out '{out}' must end in {', '.join(FORMATS)}: the format of the predictions.")
    keys, items, labels = listed(data)
    parts = out.with_name(out.name + ".parts")
    done = _open_parts(parts, keys, part, resume=resume)
    step = predictor.batch_size or predictor.fast.inference_batch_size
    started = time.perf_counter()
    count = len(range(0, len(keys), part))
    batches = (
        (index, rows)
        for index in range(done, count)
        for rows in _predict_part(predictor, keys, items, slice(index * part, (index + 1) * part), step, workers, top_k)
    )
    pending = []
    left = len(keys) - min(done * part, len(keys))
    for index, rows in progress(batches, "predict", log, total=left, unit="images", size=lambda batch: len(batch[1])):
        pending += rows
        if len(pending) < min(part, len(keys) - index * part):  # the part is not complete yet
            continue
        if labels is not None:
            for row, label in zip(pending, labels[index * part :]):
                row["label"] = label
        write_text(parts / f"part-{index:06d}.jsonl", "".join(json.dumps(row) + "\n" for row in pending))
        pending = []
    rows = [json.loads(line) for i in range(count) for line in (parts / f"part-{i:06d}.jsonl").read_text().splitlines()]
    _write(out, rows)
    shutil.rmtree(parts)
    result = PredictionFile(
        out,
        len(rows),
        sum(bool(row["error"]) for row in rows),
        time.perf_counter() - started,
        resumed=min(done * part, len(rows)),
        accuracy=_accuracy(rows) if labels is not None else None,
    )
    log(repr(result))
    return result


def prediction_workers() -> int:
    """Loader processes worth starting: none on 2 cores, where the model's threads already use both (decoding in
    2 workers made mnist5k's prediction 30% slower there, BENCHMARKS.md), then up to 4, 2 cores left to the model.
    The cores are those this process may use (:func:`~transferkit.data.items.decode_workers`)."""
    return max(0, min(4, decode_workers() - 2))


def names_many(data: str | Path) -> bool:
    """Whether ``data`` names many images (a folder, a CSV of paths, a dataset, shards), not one image file."""
    text = str(data)
    return (
        Path(text).is_dir()
        or Path(text).suffix.lower() == ".csv"
        or text.startswith(("builtin:", "wds:"))
        or is_hf_data(text)
    )


def listed(data: str | Path | list) -> tuple[list[str], list[Item], list[str] | None]:
    """The images ``data`` names: each one's key (its path as given, or under the folder), item, and label."""
    if isinstance(data, list | tuple):
        return [printable(p) for p in data], [Item(printable(p), -1, path=Path(p)) for p in data], None
    if is_hf_data(str(data)) or str(data).startswith(("builtin:", "wds:")) or is_shard_folder(Path(data)):
        return _dataset_items(str(data))  # before folders: one may hold a dataset's files
    path = Path(data)
    if path.is_dir():
        files = files_under(path)
        if not files:
            raise DataError(f"data '{printable(path)}' holds no files to predict.")
        keys = [printable(f.relative_to(path)) for f in files]
        return keys, [Item(k, -1, path=f) for k, f in zip(keys, files)], None
    if path.is_file() and path.suffix.lower() == ".csv":
        keys, files, labels = _csv_paths(path)
        return keys, [Item(k, -1, path=f) for k, f in zip(keys, files)], labels
    raise DataError(
        f"data '{printable(data)}' is not a folder or a .csv of paths; give a folder of images (read recursively), "
        "a CSV with a path column, image files, hf:NAME, wds:SHARDS or builtin:NAME."
    )


def _dataset_items(spec: str) -> tuple[list[str], list[Item], list[str] | None]:
    """Every image of a Hugging Face dataset or a builtin one, its splits in order, with its class as the label."""
    source = open_data(spec)
    items = [item for split in (source.train, source.val, source.test) for item in split or []]
    if items and items[0].shard is not None:  # a shard at a time, so that a part reads one or two shards, not all
        items.sort(key=lambda item: str(item.shard))
    labels = [source.class_names[item.label] for item in items] if isinstance(items[0].label, int) else None
    return [item.name for item in items], items, labels


def _csv_paths(path: Path) -> tuple[list[str], list[Path], list[str] | None]:
    header, rows, at = read_table(path, needs="a path column (and, for the accuracy, a label column)")
    columns = [h.strip().lower() for h in header]
    label_at = columns.index("label") if "label" in columns else None
    body = [row for _, row in rows]
    files = [Path(row[at].strip()) for row in body]
    files = [f if f.is_absolute() else path.parent / f for f in files]
    labels = None if label_at is None else [row[label_at].strip() for row in body]
    return [row[at].strip() for row in body], files, labels


def _open_parts(parts: Path, keys: list[str], part: int, *, resume: bool) -> int:
    """How many parts an interrupted prediction of the same images left complete (0 for a new one)."""
    manifest = {"images": len(keys), "part": part, "keys": hashlib.sha256("\n".join(keys).encode()).hexdigest()}
    if parts.exists() and not resume:
        raise RunError(
            f"'{parts}' holds an interrupted prediction into this file: --resume (resume=True) goes on with it; "
            "remove the folder to start again."
        )
    if resume and parts.exists():
        try:
            recorded = json.loads((parts / "manifest.json").read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != manifest:
            raise RunError(
                f"'{parts}' is a prediction of other images or parts; remove it to start again, without --resume."
            )
        done = 0
        while (parts / f"part-{done:06d}.jsonl").is_file():
            done += 1
        return done
    parts.mkdir(parents=True)
    write_json(parts / "manifest.json", manifest)
    return 0


class _Images(Dataset):
    """Each image decoded at the predictor's size, or why it cannot be (in a loader worker)."""

    def __init__(self, items: list[Item], preprocessing):
        self.items, self.pre = items, preprocessing

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        try:
            return index, load_item(self.items[index], self.pre)
        except ImageReadError as e:
            return index, printable(e)


def _predict_part(predictor: Predictor, keys: list[str], items: list[Item], chunk: slice, step: int, workers, top_k):
    """The rows of the images ``chunk`` selects, a batch at a time in order: decoded by ``workers`` processes a
    batch ahead, run ``step`` at a time."""
    keys, items = keys[chunk], items[chunk]
    if items[0].shard is not None:  # the part's shards read once, decoded by worker processes
        decoded: list = [None] * len(items)
        decode_shards(items, predictor.preprocessing, workers, decoded.__setitem__)
        loader = (list(enumerate(decoded))[i : i + step] for i in range(0, len(items), step))
    else:
        loader = DataLoader(
            _Images(items, predictor.preprocessing), batch_size=step, num_workers=workers, collate_fn=list
        )
    for batch in loader:
        rows = {i: {"image": keys[i], "error": x} for i, x in batch if not isinstance(x, torch.Tensor)}
        readable = [(i, x) for i, x in batch if isinstance(x, torch.Tensor)]
        if readable:
            results = predictor.predict_tensors([x for _, x in readable], [keys[i] for i, _ in readable], top_k=top_k)
            for (i, _), result in zip(readable, results):
                rows[i] = {"image": keys[i], "error": "", **_flat(result)}
        yield [rows[i] for i, _ in batch]


def _flat(result: dict) -> dict:
    """A prediction as the columns of its row: ranked classes and probabilities, the labels, or the value."""
    if "top" in result:
        row = {}
        for rank, entry in enumerate(result["top"], start=1):
            row[f"class_{rank}"], row[f"probability_{rank}"] = entry["label"], entry["probability"]
        return row
    if "labels" in result:
        row = {"labels": ";".join(e["label"] for e in result["labels"])}
        return row | {f"probability_{e['label']}": e["probability"] for e in result["all"]}
    low, high = result.get("interval", (None, None))
    return {"value": result["value"], "low": low, "high": high}


def _accuracy(rows: list[dict]) -> float | None:
    scored = [row for row in rows if not row["error"] and "class_1" in row and row.get("label") not in (None, "")]
    return sum(row["class_1"] == row["label"] for row in scored) / len(scored) if scored else None


def _write(out: Path, rows: list[dict]) -> None:
    """``rows`` into ``out`` at once, in the format its suffix names; every row has every column."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    rows = [{c: row.get(c) for c in columns} for row in rows]
    with atomic_path(out) as tmp:
        suffix = out.suffix.lower()
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), tmp)
        elif suffix == ".jsonl":
            tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        else:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
