"""``transferkit advise``: which strategy to train with, from linear probes at several depths."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import DataOpt, ImageSizeOpt, JsonOpt, ModelArg, TerminalLog, WeightsOpt, emit_json, output_console
from ._config_options import TASK_FIELDS, config_options


@config_options(only=TASK_FIELDS)
def advise_command(
    model: ModelArg,
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="Where advice.json and probe_depth.png go.")],
    weights: WeightsOpt = "auto",
    image_size: ImageSizeOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", metavar="N", min=1, help="Epochs the time estimates assume.")] = 5,
    budget: Annotated[
        float | None,
        typer.Option("--budget", metavar="SECONDS", min=0, help="Advise nothing estimated to take longer."),
    ] = None,
    as_json: JsonOpt = False,
    *,
    settings: dict,
) -> None:
    """Probe the pretrained features at several depths on DATA and recommend a strategy, with time estimates.

    The probes are linear models of the task: logistic regression for classes, one per label for
    --task multi-label (scored by mAP), ridge regression for --task regression (scored by R²).
    """
    from ..advice.advise import advise
    from ..train.config import TrainConfig

    console = output_console(as_json)
    config = TrainConfig(
        model=model, weights=weights, data=data, out=out, image_size=image_size, epochs=epochs, **settings
    )
    result = advise(config, budget=budget, log=TerminalLog(as_json))
    if as_json:
        emit_json(result)
        return
    for command, seconds in result["estimated_seconds"].items():
        console.print(f"  {command}: about {seconds:.0f} s for {epochs} epochs", markup=False)
    console.print(f"advised in {result['seconds']:.1f} s; to train it:", markup=False)
    console.print(f"  {result['train_command']}", markup=False, soft_wrap=True)
