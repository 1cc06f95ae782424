"""Reading a CSV's labels for each task, with an error naming the line for every bad value.

* classification: a ``label`` column (or ``class``, ``category``), one class per row;
* multi-label: a ``labels`` column holding the labels that apply, joined by ``sep`` (``;`` by
  default; an empty cell is an image where none applies), or one 0/1 column per label
  (``columns``);
* regression: a numeric ``target`` column, or the one ``target_column`` names.

A row's labels are kept as an ``Item.label`` of the task's own type: the class index (int), a
0/1 tuple over the label names (multi-label), or the number (float). The rest of the pipeline
reads the task from that type (:func:`task_of`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import DataError

__all__ = ["TASKS", "LabelSpec", "parse_cell", "task_of"]

TASKS = ("classification", "multi-label", "regression")
LABEL_COLUMNS = ("label", "class", "category")
MULTI_COLUMNS = ("labels", "tags", *LABEL_COLUMNS)
TARGET_COLUMNS = ("target", "value", "y")


@dataclass(frozen=True)
class LabelSpec:
    """Where a CSV holds each row's labels, for ``task``."""

    task: str = "classification"
    sep: str = ";"
    columns: tuple[str, ...] = ()  # multi-label: one 0/1 column per label
    target_column: str | None = None  # regression: the numeric column (default: target, value or y)

    def __post_init__(self):
        if self.task not in TASKS:
            raise DataError(f"Unknown task '{self.task}'; use one of {', '.join(TASKS)}.")
        if self.task == "multi-label" and not self.columns and not self.sep.strip():
            raise DataError("The label separator must be a visible character such as ';' or '|'.")

    def label_columns(self, columns: list[str], shown: str) -> list[int]:
        """Positions of the columns holding the labels among the header's ``columns`` (lower-case, stripped)."""
        if self.task == "multi-label" and self.columns:
            wanted = [c.strip().lower() for c in self.columns]
            missing = [c for c, w in zip(self.columns, wanted) if w not in columns]
            if missing:
                raise DataError(f"CSV '{shown}' has no label column {', '.join(repr(m) for m in missing)}.")
            return [columns.index(w) for w in wanted]
        if self.task == "regression" and self.target_column:
            wanted = self.target_column.strip().lower()
            if wanted not in columns:
                raise DataError(f"CSV '{shown}' has no target column '{self.target_column}'.")
            return [columns.index(wanted)]
        names = {"classification": LABEL_COLUMNS, "multi-label": MULTI_COLUMNS, "regression": TARGET_COLUMNS}[self.task]
        found = next((columns.index(c) for c in names if c in columns), None)
        if found is None:
            kind = {"classification": "'label'", "multi-label": "'labels'", "regression": "'target'"}[self.task]
            raise DataError(
                f"CSV '{shown}' needs a header with 'path' and {kind} columns"
                + (" (or one 0/1 column per label, named as label columns)" if self.task == "multi-label" else "")
                + (" (or another numeric column, named as the target column)" if self.task == "regression" else "")
                + f"; its columns are {', '.join(columns)[:80]!r}."
            )
        return [found]


def parse_cell(spec: LabelSpec, cells: list[str], where: str) -> str | frozenset[str] | tuple[int, ...] | float:
    """One row's labels from its label cells (:meth:`LabelSpec.label_columns`); ``where`` names the row in errors.

    Returns the class name, the set of label names (``labels`` column), the 0/1 tuple (one column
    per label) or the number.
    """
    if spec.task == "classification":
        if not cells[0].strip():
            raise DataError(f"{where} has an empty label.")
        return cells[0].strip()
    if spec.task == "regression":
        text = cells[0].strip()
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{where} has target {text!r}, which is not a number.") from None
        if not math.isfinite(value):
            raise DataError(f"{where} has target {text!r}; targets must be finite numbers.")
        return value
    if spec.columns:
        flags = []
        for name, cell in zip(spec.columns, cells):
            if cell.strip() not in ("0", "1", "0.0", "1.0"):
                raise DataError(f"{where} has {cell.strip()!r} in label column '{name}'; use 0 or 1.")
            flags.append(int(float(cell)))
        return tuple(flags)
    text = cells[0].strip()
    if not text:
        return frozenset()
    names = [n.strip() for n in text.split(spec.sep)]
    if not all(names):
        raise DataError(f"{where} has an empty label name in {text!r} (labels joined by {spec.sep!r}).")
    return frozenset(names)


def task_of(label) -> str:
    """The task an ``Item.label`` belongs to: an int is a class, a tuple a set of 0/1 labels, a float a number."""
    if isinstance(label, tuple):
        return "multi-label"
    if isinstance(label, float):
        return "regression"
    return "classification"
