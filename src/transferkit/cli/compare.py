"""``transferkit compare``: several strategies on one split, one table and a learning-curve plot."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..compare import compare
from ..engine import TrainConfig
from ._common import JsonOpt, emit_json, output_console


def print_comparison(console: Console, rows: list[dict], plot: str) -> None:
    table = Table(title="strategies compared on one split")
    for col in ("strategy", "trainable params", "seconds", "acc after epoch 1", "best acc"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        table.add_row(
            r["strategy"],
            f"{r['trainable_params']:,}",
            f"{r['seconds']:.0f}",
            f"{100 * r['epoch1_acc']:.1f}%",
            f"{100 * r['best_acc']:.1f}%",
        )
    console.print(table)
    console.print(f"learning curves: {plot}")


def compare_command(
    model: Annotated[str, typer.Option("--model", help="MODEL.")],
    data: Annotated[str, typer.Option("--data", help="DATA.")],
    out: Annotated[str, typer.Option("--out", help="Folder for one run per strategy and the plot.")],
    weights: Annotated[str | None, typer.Option("--weights", help="Pretrained weights (scratch ignores them).")] = None,
    strategies: Annotated[str, typer.Option("--strategies", help="Comma-separated.")] = "full,freeze,gradual,scratch",
    epochs: Annotated[int, typer.Option("--epochs")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    image_size: Annotated[int | None, typer.Option("--image-size")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Train each strategy on the same split and compare accuracy, speed and trainable parameters."""
    console = output_console(as_json)
    base = TrainConfig(
        model=model,
        data=data,
        out=out,
        weights=weights,
        epochs=epochs,
        batch_size=batch_size,
        image_size=image_size,
        seed=seed,
        device=device,
    )
    result = compare(
        base, [s.strip() for s in strategies.split(",") if s.strip()], log=lambda m: console.print(m, markup=False)
    )
    if as_json:
        emit_json(result)
    else:
        print_comparison(console, result["rows"], result["plot"])
