"""``transferkit lr-find``: the learning-rate range test, its plot and a suggested rate."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, ModelArg, TerminalLog, emit_json, output_console
from ._config_options import config_options


@config_options(
    skip=["model", "epochs", "patience", "monitor", "balance", "mixup", "cutmix", "cache_views", "augment"],
    defaults={"out": "runs/lr-find"},
    required=["data"],
    help={"out": "Folder for lr_find.png (and decoded images that do not fit in memory)."},
)
def lr_find_command(
    model: ModelArg,
    start: Annotated[float, typer.Option("--start", metavar="LR", help="Smallest rate tried.")] = 1e-7,
    end: Annotated[float, typer.Option("--end", metavar="LR", help="Largest rate tried.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", metavar="N", help="Training steps over the range.")] = 100,
    as_json: JsonOpt = False,
    *,
    settings: dict,
) -> None:
    """Find a learning rate: train briefly while the rate grows, plot the loss, suggest a rate."""
    from ..train.config import TrainConfig
    from ..train.lr_find import find_lr

    console = output_console(as_json)
    # Two epochs: strategies with two phases need them; the test runs the first phase only.
    config = TrainConfig(model=model, epochs=2, **settings)
    result = find_lr(config, start=start, end=end, steps=steps, log=TerminalLog(as_json))
    if as_json:
        emit_json(result)
    else:
        console.print(f"suggested --lr {result['suggestion']:.2e}; plot in {result['plot']}")
