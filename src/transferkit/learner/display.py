"""What a Learner shows in a notebook: a page (report.html inline) and a plot (a PNG)."""

from __future__ import annotations

import html
from pathlib import Path

from .._table import Table
from ..inference.task_eval import score_line

__all__ = ["Page", "Plot", "Scores"]


class Page:
    """A written HTML page: its path when printed, the page itself inline in Jupyter."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{self.path}"

    def __fspath__(self) -> str:
        return str(self.path)

    def _repr_html_(self) -> str:
        page = html.escape(self.path.read_text(encoding="utf-8"), quote=True)
        return f'<iframe srcdoc="{page}" style="width:100%;height:720px;border:0"></iframe>'


class Plot:
    """A figure as PNG bytes, shown in Jupyter; :meth:`save` writes it."""

    def __init__(self, png: bytes, title: str):
        self.png, self.title = png, title

    def __repr__(self) -> str:
        return f"<{self.title}: a PNG of {len(self.png):,} bytes; .save(path) writes it>"

    def _repr_png_(self) -> bytes:
        return self.png

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.png)
        return path


class Scores(dict):
    """What ``evaluate`` gives (the dict ``transferkit eval --json`` writes), shown as its headline scores and a
    table per class (per label); every value stays a key of the dict."""

    def headline(self) -> str:
        return f"{self.get('images')} images: {score_line(self)}"

    def table(self) -> Table:
        """Per class: precision, recall, F1 and support (per label: AP and the threshold too)."""
        if "per_class" in self:
            rows = [{"class": name, **row} for name, row in self["per_class"].items()]
            return Table(rows, title="per class", columns=["class", "precision", "recall", "f1", "support"])
        if "per_label" in self:
            rows = [{"label": name, **row} for name, row in self["per_label"].items()]
            return Table(rows, title="per label", columns=["label", "ap", "precision", "recall", "f1", "threshold"])
        return Table([])

    def __str__(self) -> str:
        table = self.table()
        return self.headline() + (f"\n{table}" if len(table) else "")

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        table = self.table()
        return f"<p>{html.escape(self.headline())}</p>" + (table._repr_html_() if len(table) else "")
