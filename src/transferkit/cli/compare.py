"""``transferkit compare``: several strategies on one split, one table and a learning-curve plot."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, ModelArg, TerminalLog, emit_json, output_console
from ._config_options import config_options


def print_comparison(console, rows: list[dict], plot: str) -> None:
    from rich.table import Table

    from ..advice.compare import score_text
    from ..tasks.scores import score_name

    score = rows[0]["score"]
    name = score_name(score)
    table = Table(title="strategies compared on one split")
    for col in ("strategy", "trainable params", "seconds", f"{name} after epoch 1", f"best {name}"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        table.add_row(
            r["strategy"],
            f"{r['trainable_params']:,}",
            f"{r['seconds']:.0f}",
            score_text(r["epoch1"], score),
            score_text(r["best"], score),
        )
    console.print(table)
    console.print(f"learning curves: {plot}")


@config_options(
    skip=["model", "strategy"],
    defaults={"epochs": 3},
    help={"out": "Folder for one run per strategy, compare.json and the plot."},
)
def compare_command(
    model: ModelArg,
    strategies: Annotated[
        str, typer.Option("--strategies", metavar="LIST", help="Comma-separated strategies to train.")
    ] = "full,freeze,gradual,scratch",
    as_json: JsonOpt = False,
    *,
    settings: dict,
) -> None:
    """Train each strategy on the same split and compare accuracy, speed and trainable parameters.

    The data is decoded and the kernels measured once for all strategies. --task multi-label
    compares macro mAP, --task regression MAE (or the --monitor score).
    """
    from ..advice.compare import compare
    from ..train.config import TrainConfig

    console = output_console(as_json)
    result = compare(
        TrainConfig(model=model, **settings),
        [s.strip() for s in strategies.split(",") if s.strip()],
        log=TerminalLog(as_json),
    )
    if as_json:
        emit_json(result)
    else:
        print_comparison(console, result["rows"], result["plot"])
