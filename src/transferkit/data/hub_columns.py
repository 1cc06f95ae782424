"""Which columns of a Hugging Face dataset hold the images and the labels, and what the labels are: classes
(a ClassLabel or strings), lists of them, or numbers."""

from __future__ import annotations

from dataclasses import dataclass

from .._text import printable
from ..errors import DataError
from ..tasks.targets import LABEL_COLUMNS, MULTI_COLUMNS, TARGET_COLUMNS

__all__ = ["Labels", "classes_of", "find_image_column", "find_label_column"]


def find_image_column(spec: str, features, named: str | None) -> str:
    columns = ", ".join(features)
    if named is not None:
        _check_named(spec, features, named, "image_column")
        if not _holds_images(features[named]):
            raise DataError(f"Data '{spec}' column '{named}' holds {_kind(features[named])}, not images.")
        return named
    found = [name for name, feature in features.items() if _holds_images(feature)]
    if len(found) != 1:
        which = f"several image columns ({', '.join(found)})" if found else f"no image column (columns: {columns})"
        raise DataError(f"Data '{spec}' has {which}; name the one to use with image_column.", argument="image_column")
    return found[0]


def _check_named(spec: str, features, named: str, argument: str) -> None:
    """Refuse a column named by ``argument`` (image_column, label_column) that the dataset does not have."""
    if named not in features:
        raise DataError(
            f"Data '{spec}' has no column '{named}' ({argument}); its columns: {', '.join(features)}.",
            argument=argument,
        )


def _holds_images(feature) -> bool:
    """datasets' Image, or what it stores one as (the file's bytes and path, or bytes) in parquet from other tools."""
    from datasets import Image, Value

    if isinstance(feature, dict):
        return set(feature) == {"bytes", "path"}
    return isinstance(feature, Image) or (isinstance(feature, Value) and feature.dtype in ("binary", "large_binary"))


def find_label_column(spec: str, features, named: str | None, task: str) -> str:
    from datasets import ClassLabel

    columns = ", ".join(features)
    if named is not None:
        _check_named(spec, features, named, "label_column")
        return named
    if task != "regression":
        found = [n for n, f in features.items() if isinstance(_inner(f) if task == "multi-label" else f, ClassLabel)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(
                f"Data '{spec}' has several class columns ({', '.join(found)}); name one with label_column.",
                argument="label_column",
            )
        lists = [n for n, f in features.items() if isinstance(_inner(f), ClassLabel)]
        if task == "classification" and lists:
            raise DataError(
                f"Data '{spec}' column '{lists[0]}' holds lists of classes: train with task multi-label.",
                argument="task",
            )
    usual = {"classification": LABEL_COLUMNS, "multi-label": MULTI_COLUMNS, "regression": TARGET_COLUMNS}[task]
    found = next((n for u in (*usual, *LABEL_COLUMNS) for n in features if n.lower() == u), None)
    if found is None:
        raise DataError(
            f"Data '{spec}' has no label column (columns: {columns}); name it with label_column.",
            argument="label_column",
        )
    return found


def _inner(feature):
    """The feature of a list's items, or None for a feature that is no list."""
    from datasets import LargeList, List

    return feature.feature if isinstance(feature, List | LargeList) else None


def _kind(feature) -> str:
    dtype = getattr(feature, "dtype", None)
    return dtype if isinstance(dtype, str) else type(feature).__name__


@dataclass(frozen=True)
class Labels:
    """How a label cell becomes an ``Item.label`` (None: the row has no label); pickles for loader workers."""

    kind: str  # class, string, class-list, string-list, number
    names: tuple[str, ...] = ()

    def __call__(self, value):
        if value is None:
            return None
        if self.kind == "number":
            return float(value)
        if self.kind == "class":
            return None if value < 0 else int(value)  # -1: no label (e.g. a hidden test split)
        if self.kind == "string":
            return _string_class(value, self.names)
        if self.kind == "class-list":
            return tuple(int(i in set(value)) for i in range(len(self.names)))
        return _multi(value, self.names)


def classes_of(spec: str, feature, column: str, train_values: list, task: str) -> tuple[list[str], Labels]:
    """The class names (or the target's name) and how a row's value becomes its label."""
    from datasets import ClassLabel, Value

    where = f"Data '{spec}' column '{column}'"
    if task == "regression":
        if not (isinstance(feature, Value) and (feature.dtype.startswith(("int", "uint", "float")))):
            raise DataError(f"{where} holds {_kind(feature)}; task regression needs numbers.", argument="task")
        return [column], Labels("number")
    if task == "multi-label":
        inner = _inner(feature)
        if isinstance(inner, ClassLabel):
            return list(inner.names), Labels("class-list", tuple(inner.names))
        if isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
            names = sorted(set().union(*(set(v) for v in train_values if v is not None)))
            return names, Labels("string-list", tuple(names))
        raise DataError(
            f"{where} holds {_kind(feature)}; task multi-label needs lists of classes (ClassLabel) or strings.",
            argument="task",
        )
    if isinstance(feature, ClassLabel):
        return list(feature.names), Labels("class", tuple(feature.names))
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        names = sorted({v.strip() for v in train_values if v is not None and v.strip()})
        return names, Labels("string", tuple(names))
    if _inner(feature) is not None:
        raise DataError(f"{where} holds lists of labels: train with task multi-label.", argument="task")
    numbers = " (numbers to predict: task regression)" if _kind(feature).startswith("float") else ""
    raise DataError(
        f"{where} holds {_kind(feature)}, not classes: labels must be a ClassLabel (which names the classes) or "
        f"strings; cast it with datasets' cast_column(ClassLabel(names=...)) or name another with label_column"
        f"{numbers}.",
        argument=("label_column", "task") if numbers else "label_column",
    )


def _string_class(value: str, names: tuple[str, ...]) -> int | None:
    if not value.strip():
        return None
    if value.strip() not in names:
        raise DataError(f"class '{printable(value.strip())}' has no training rows.")
    return names.index(value.strip())


def _multi(values: list[str], names: tuple[str, ...]) -> tuple[int, ...]:
    unknown = [v for v in values if v not in names]
    if unknown:
        raise DataError(f"label '{printable(unknown[0])}' has no training rows.")
    return tuple(int(n in values) for n in names)
