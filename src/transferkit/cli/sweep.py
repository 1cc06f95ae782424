"""``transferkit sweep``: the head's learning rate, weight decay and label smoothing, searched on cached features."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import DataOpt, ImageSizeOpt, JsonOpt, ModelArg, TerminalLog, WeightsOpt, emit_json, output_console
from ._config_options import TASK_FIELDS, config_options


@config_options(only=TASK_FIELDS)
def sweep_command(
    model: ModelArg,
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="Where sweep.json and best_config.json go.")],
    weights: WeightsOpt = "auto",
    image_size: ImageSizeOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", metavar="N", min=1, help="Epochs of each head training.")] = 5,
    trials: Annotated[
        int | None,
        typer.Option("--trials", metavar="N", min=1, help="N random settings instead of the grid."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", metavar="N", min=1, help="Trainings per setting.")] = 3,
    as_json: JsonOpt = False,
    *,
    settings: dict,
) -> None:
    """Train the head on cached features for a grid (or random set) of settings, several seeds each.

    Prints each setting's mean held-out score (accuracy; mAP for --task multi-label, MAE for
    --task regression) with its 95% interval; writes the best as best_config.json, which
    'transferkit train --config' reads.
    """
    from ..advice.sweep import sweep
    from ..train.config import TrainConfig

    console = output_console(as_json)
    config = TrainConfig(
        model=model,
        weights=weights,
        data=data,
        out=out,
        image_size=image_size,
        epochs=epochs,
        strategy="freeze",
        **settings,
    )
    result = sweep(config, trials=trials, seeds=seeds, log=TerminalLog(as_json))
    if as_json:
        emit_json(result)
        return
    best = result["best"]
    smoothing = f", label smoothing {best['label_smoothing']:.2g}" if config.task == "classification" else ""
    console.print(
        f"{len(result['settings'])} settings x {seeds} seeds in {result['seconds']:.1f} s; best: lr {best['lr']:.2g}, "
        f"weight decay {best['weight_decay']:.2g}{smoothing} ({result['score']} {best['mean']:.4f}, "
        f"95% interval {best['low']:.4f}-{best['high']:.4f}). "
        f"transferkit train --config {out}/best_config.json --out RUN"
    )
