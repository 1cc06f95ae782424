"""Options and output shared by the commands."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = [
    "InChansOpt",
    "InputSizeOpt",
    "JsonOpt",
    "ModelArg",
    "NumClassesOpt",
    "console",
    "emit_json",
    "output_console",
    "human_count",
    "parse_input_size",
]

# Wide enough for tables of layer paths when the output is a file or a pipe.
_WIDTH = None if sys.stdout.isatty() else 120
console = Console(highlight=False, width=_WIDTH)


def output_console(as_json: bool) -> Console:
    """Where a command's progress goes: stdout, or stderr when stdout carries the JSON object."""
    return Console(file=sys.stderr if as_json else sys.stdout, highlight=False, width=_WIDTH)


ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="timm name (resnet34), torchvision:NAME, path/to/model.py:factory or package.module:factory.",
    ),
]
NumClassesOpt = Annotated[int | None, typer.Option("--num-classes", help="Give the model a head for N classes.")]
InChansOpt = Annotated[
    int | None, typer.Option("--in-chans", help="Input channels (1 for grayscale); RGB weights are adapted.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
InputSizeOpt = Annotated[
    str | None, typer.Option("--input-size", help="Dry-run input as C,H,W (default: the model's own).")
]


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=_default) + "\n")


def _default(value: Any):
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise typer.BadParameter(f"'{text}' is not C,H,W (for example 3,224,224).", param_hint="--input-size")
    return size


def human_count(n: int) -> str:
    return f"{n:,}"
