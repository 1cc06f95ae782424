"""``transferkit eval``: accuracy, per-class accuracy and confusion matrix of a run."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import BatchSizeOpt, DeviceOpt, JsonOpt, TrustCodeOpt, console, emit_json, note


def eval_command(
    run: Annotated[str, typer.Argument(metavar="DIR", help="The --out folder of a training run.")],
    data: Annotated[
        str | None,
        typer.Option("--data", metavar="DATA", help="DATA to evaluate on (default: the run's held-out split)."),
    ] = None,
    which: Annotated[str, typer.Option("--checkpoint", metavar="NAME", help="best or last.")] = "best",
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = None,
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a trained run: accuracy, per-class accuracy and the confusion matrix."""
    from rich.table import Table

    from ..inference.runs import evaluate_run

    result = evaluate_run(run, data, which=which, device=device, batch_size=batch_size, trust_code=trust_code)
    for line in result["notes"]:
        note(line)
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['run']} on {result['data']} ({result['split']}, {result['images']} images)")
    console.print(f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}")
    names = result["class_names"]
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("class")
    for name in names:
        table.add_column(name[:8], justify="right")
    table.add_column("accuracy", justify="right")
    for name, row in zip(names, result["confusion_matrix"]):
        acc = result["per_class_accuracy"][name]
        table.add_row(name, *map(str, row), "-" if acc is None else f"{acc:.3f}")
    console.print(table)
    if result["skipped_images"]:
        console.print(
            f"{len(result['skipped_images'])} unusable images skipped, e.g. {result['skipped_images'][0]['name']}"
        )
