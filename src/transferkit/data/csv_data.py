"""DATA that is a CSV file: a header naming ``path`` and ``label`` columns (or ``labels``, one 0/1 column per
label, ``target``), an optional ``split`` column; paths relative to the CSV's folder."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .._text import printable
from ..errors import DataError
from ..tasks.targets import LABEL_COLUMNS, TARGET_COLUMNS, LabelSpec, parse_cell
from .items import SPLIT_FOLDERS, DataSource, Item, checked, unusable

__all__ = ["csv_task", "read_csv", "read_table"]


_PATH_COLUMNS = ("path", "file", "filename", "image")


def read_csv(path: Path, spec: LabelSpec) -> DataSource:
    """DATA that is a CSV: its rows as items of their splits, the classes (labels, target) its columns give."""
    shown = printable(path)
    rows, label_header = _csv_rows(path, spec)
    if spec.task == "classification":
        names = sorted({label for _, label, split, _ in rows if split == "train"})
    elif spec.task == "regression":
        names = label_header
    elif spec.columns:
        names = list(spec.columns)
    else:
        names = sorted(set().union(*(label for _, label, split, _ in rows if split == "train")))
    splits: dict[str, list[Item]] = {}
    skipped = []
    for file, label, split, line in rows:
        file_path = Path(file) if Path(file).is_absolute() else path.parent / file
        unknown = [label] if spec.task == "classification" else sorted(label) if isinstance(label, frozenset) else []
        unknown = [name for name in unknown if name not in names]
        if unknown:
            kind = "class" if spec.task == "classification" else "label"
            raise DataError(f"CSV '{shown}' line {line}: {kind} '{unknown[0]}' ({split}) has no training rows.")
        reason = unusable(file_path)
        if reason:
            skipped.append((f"{printable(file_path)} (line {line})", reason))
            continue
        if spec.task == "classification":
            label = names.index(label)
        elif isinstance(label, frozenset):
            label = tuple(int(name in label) for name in names)
        splits.setdefault(split, []).append(Item(printable(file_path), label, path=file_path))
    if not splits.get("train"):
        raise DataError(f"CSV '{shown}' names no usable training files ({len(skipped)} skipped, e.g. {skipped[0][0]}).")
    folders = {s: f"split column: {s}" for s in splits} if set(splits) != {"train"} else {}
    return checked(
        DataSource(str(path), names, splits["train"], splits.get("val"), skipped, splits.get("test"), folders)
    )


def csv_task(spec: str) -> tuple[str, str] | None:
    """For DATA that is a CSV with no ``label`` column: the task its columns say, and the column that says it
    (``labels``: several labels per image; ``target``: a number per image); None otherwise. Reads the header only.

    Examples:
        >>> csv_task("tags.csv")  # path,labels
        ('multi-label', 'labels')
    """
    path = Path(spec)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None  # reading the whole file says what is wrong
    columns = [h.strip().lower() for h in header or []]
    if any(c in columns for c in LABEL_COLUMNS):
        return None
    for task, names in (("multi-label", ("labels", "tags")), ("regression", TARGET_COLUMNS)):
        found = next((c for c in names if c in columns), None)
        if found:
            return task, found
    return None


def _csv_rows(path: Path, spec: LabelSpec) -> tuple[list[tuple[str, object, str, int]], list[str]]:
    """(path, labels, split, line) for each row (labels as :func:`~transferkit.tasks.targets.parse_cell`
    reads them), and the header's names of the label columns; or a DataError naming the line that is
    wrong and how.

    An optional ``split`` column puts a row in train, val or test (the folder names of
    :data:`SPLIT_FOLDERS` are accepted too); without it every row is for training.
    """
    shown = printable(path)
    header, table, path_col = read_table(path, needs="'path' and 'label' columns")
    columns = [h.strip().lower() for h in header]
    split_col = columns.index("split") if "split" in columns else None
    label_cols = spec.label_columns(columns, shown)
    rows = []
    for line, row in table:
        label = parse_cell(spec, [row[c] for c in label_cols], f"CSV '{shown}' line {line}")
        split = "train" if split_col is None else _split_name(row[split_col])
        if split is None:
            raise DataError(f"CSV '{shown}' line {line} has split {row[split_col].strip()!r}; use train, val or test.")
        rows.append((row[path_col].strip(), label, split, line))
    return rows, [header[c].strip() for c in label_cols]


def read_table(path: Path, *, needs: str) -> tuple[list[str], list[tuple[int, list[str]]], int]:
    """A CSV of image paths read as text, every line checked: (its header, its non-blank rows with their line
    numbers, the position of its path column), or a DataError naming the line that is wrong and how.

    UTF-8 with or without Excel's byte-order mark; every row has the header's number of fields and a path.
    ``needs`` names the columns the caller needs, for the message when the header has no path column.
    """
    shown = printable(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"CSV '{shown}' is not UTF-8 text (line {line}, byte {e.start}); save it as UTF-8 (CSV UTF-8 in Excel)."
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"CSV '{shown}' line {line} holds a NUL byte: it is a binary file, not CSV text.")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"CSV '{shown}' is empty; it needs a header with {needs}.")
        columns = [h.strip().lower() for h in header]
        path_col = next((columns.index(c) for c in _PATH_COLUMNS if c in columns), None)
        if path_col is None:
            raise DataError(
                f"CSV '{shown}' needs a header with {needs}; its first line is {printable(','.join(header))[:80]!r}."
            )
        rows = []
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise DataError(
                    f"CSV '{shown}' line {line} has {len(row)} fields where the header has {len(header)}; "
                    'quote fields that contain commas ("cat, tabby").'
                )
            if not row[path_col].strip():
                raise DataError(f"CSV '{shown}' line {line} has an empty path.")
            rows.append((line, row))
    except csv.Error as e:
        raise DataError(f"CSV '{shown}' line {reader.line_num} cannot be read: {e}. Is it a CSV text file?") from None
    if not rows:
        raise DataError(f"CSV '{shown}' has no rows.")
    return header, rows, path_col


def _split_name(text: str) -> str | None:
    word = text.strip().lower()
    return next((split for split, names in SPLIT_FOLDERS.items() if word in names), None)
