"""A prediction interval for numbers: split conformal, from best.pt's residuals on the validation images.

With n validation residuals |y - ŷ|, the ⌈(n + 1) · level⌉-th smallest one, q, makes ŷ ± q cover
a new image's true value with probability at least ``level`` when the new image comes from the
same distribution as the validation images (Vovk et al., 2005; Lei et al., 2018). The interval
has one width for every image. It is kept in the run folder (``interval.json``) for ``predict``;
like every file of a run folder it may come from someone else, so it is checked when read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import RunError
from ..serialization import write_json

__all__ = ["INTERVAL_FILE", "LEVEL", "read_interval", "split_conformal", "write_interval"]

INTERVAL_FILE = "interval.json"
LEVEL = 0.9


def split_conformal(residuals, level: float = LEVEL) -> float:
    """The half-width q of the split-conformal interval at ``level`` (infinite with too few residuals)."""
    ordered = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    rank = math.ceil((len(ordered) + 1) * level)
    return float(ordered[rank - 1]) if rank <= len(ordered) else math.inf


def write_interval(run: str | Path, *, half_width: float, level: float, images: int, epoch: int) -> dict:
    facts = {"level": level, "half_width": half_width, "images": images, "epoch": epoch, "method": "split conformal"}
    write_json(Path(run) / INTERVAL_FILE, facts)
    return facts


def read_interval(run: str | Path, epoch: int | None = None) -> dict | None:
    """The run's interval, or None when it has none or it was computed for another epoch; damaged: an error."""
    path = Path(run) / INTERVAL_FILE
    if not path.is_file():
        return None
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
        width, level = float(facts["half_width"]), float(facts["level"])
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise RunError(f"'{path}' is damaged; delete it to predict without an interval.") from None
    if math.isnan(width) or width < 0 or not 0 < level < 1:
        raise RunError(f"'{path}' holds half-width {width} at level {level}; delete it, or train again.")
    if epoch is not None and facts.get("epoch") != epoch:
        return None
    return {**facts, "half_width": width, "level": level}
