"""Rows that read well where they are shown: aligned text in a terminal, an HTML table in a notebook, a
pandas DataFrame on request (pandas stays optional)."""

from __future__ import annotations

import html
from dataclasses import asdict

__all__ = ["Table"]


class Table(list):
    """A list of rows (dicts, or dataclasses) that shows itself as a table: aligned text for ``print``, HTML in a
    notebook, and a pandas DataFrame from :meth:`to_pandas`. It stays a list: indexing, ``len`` and JSON as one.

    Examples:
        >>> print(Table([{"epoch": 1, "val_acc": 0.91234}], title="history"))
        history
        epoch  val_acc
            1   0.9123
    """

    def __init__(self, rows=(), *, title: str = "", columns: list[str] | None = None, shown=None):
        super().__init__(rows)
        self.title = title
        self._columns = columns
        self._shown = shown  # a row as the dict that is shown (default: the row, or its fields)

    def display_rows(self) -> list[dict]:
        """The rows as dicts of what is shown."""
        if self._shown is not None:
            return [self._shown(row) for row in self]
        return [row if isinstance(row, dict) else asdict(row) for row in self]

    @property
    def columns(self) -> list[str]:
        return self._columns_of(self.display_rows())

    def _columns_of(self, rows: list[dict]) -> list[str]:
        return list(self._columns or (rows[0] if rows else []))

    def to_pandas(self):
        """The rows as a pandas DataFrame (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas needs pandas: pip install pandas.") from None
        rows = self.display_rows()
        return pd.DataFrame(rows, columns=self._columns_of(rows))

    def _layout(self) -> tuple[list[str], list[dict], list[list[str]]]:
        """The columns, the rows as shown and each row's values as text: every row made once."""
        rows = self.display_rows()
        columns = self._columns_of(rows)
        return columns, rows, [[_cell(row.get(c)) for c in columns] for row in rows]

    def __str__(self) -> str:
        columns, rows, cells = self._layout()
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        numeric = [all(_is_number(row.get(c)) for row in rows) for c in columns]

        def line(values: list[str]) -> str:
            parts = [v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)]
            return "  ".join(parts).rstrip()

        lines = ([self.title] if self.title else []) + [line(columns)] + [line(r) for r in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        columns, _, cells = self._layout()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in cells)
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) or value is None


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 or (value and abs(value) < 1e-3) else f"{value:.4f}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return str(value)
