"""The ``transferkit`` entry point: registers the commands and turns user errors into one line."""

from __future__ import annotations

import os
import sys

import typer

from ..errors import TransferkitError
from .compare import compare_command
from .demo import demo_command
from .eval import eval_command
from .inspect import inspect_command
from .load import load_command
from .plan import plan_command
from .predict import predict_command
from .surgery import surgery_command
from .train import train_command
from .weights import weights_command

app = typer.Typer(
    name="transferkit",
    help="Transfer learning for PyTorch image classifiers: load, freeze, replace and inspect, every step checked.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("demo")(demo_command)
app.command("inspect")(inspect_command)
app.command("load")(load_command)
app.command("plan")(plan_command)
app.command("surgery")(surgery_command)
app.command("weights")(weights_command)
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("compare")(compare_command)
app.command("predict")(predict_command)

USER_ERROR = 2


def main() -> None:
    """Run the CLI; a :class:`TransferkitError` prints one line on stderr and exits 2."""
    try:
        app()
    except TransferkitError as e:
        if os.environ.get("TRANSFERKIT_DEBUG") == "1":
            raise
        message = " ".join(str(e).split())
        print(f"transferkit: error: {message}", file=sys.stderr)
        sys.exit(USER_ERROR)
