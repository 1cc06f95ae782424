"""Options, conventions and output shared by the commands; nothing here imports torch."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from typing import Annotated, Any

import typer

from .._text import printable
from ..train.config import TrainConfig

__all__ = [
    "CONTEXT",
    "LIBRARY_ARGUMENTS",
    "BatchSizeOpt",
    "DeviceOpt",
    "ImageSizeOpt",
    "InChansOpt",
    "JsonOpt",
    "QuietOpt",
    "TerminalLog",
    "TrustCodeOpt",
    "VerboseOpt",
    "TtaOpt",
    "ModelArg",
    "ModelOpt",
    "DataOpt",
    "WeightsOpt",
    "NumClassesOpt",
    "console",
    "dry_run_size",
    "emit_json",
    "note",
    "printable",
    "verbosity",
    "flag_for",
    "human_count",
    "output_console",
]

# -h beside --help, for every command.
CONTEXT = {"help_option_names": ["-h", "--help"]}

# Library arguments whose names a message may use; the CLI shows them as flags.
LIBRARY_ARGUMENTS = {f.name for f in fields(TrainConfig)} | {
    "allow_partial",
    "mapping",
    "min_loaded",
    "num_classes",
    "strategies",
    "trust_checkpoint",
    "trust_code",
    "overwrite",
    "start",
    "steps",
    "use_ema",
}
_FLAGS = {"cache": "--no-cache", "model": "MODEL", "which": "--checkpoint"}  # what a user types to change the default


def flag_for(argument: str) -> str:
    """The command-line flag of a library argument: ``batch_size`` -> ``--batch-size``."""
    return _FLAGS.get(argument, "--" + argument.replace("_", "-"))


# Wide enough for tables of layer paths when the output is a file or a pipe.
_WIDTH = None if sys.stdout.isatty() else 120


class _LazyConsole:
    """rich's Console, created on first use (importing rich is not free)."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=sys.stderr if self._stderr else None,
                highlight=False,
                markup=False,  # names come from users' files: '[/x]' in one must print, not parse
                width=_WIDTH,
            )
        return getattr(self._console, name)

    def print(self, *objects, **kwargs) -> None:
        # A path with bytes that are not UTF-8 prints with them escaped (\xfc), never as an encoding error.
        shown = [printable(o) if isinstance(o, str) else o for o in objects]
        self.__getattr__("print")(*shown, **kwargs)


console = _LazyConsole()


def output_console(as_json: bool):
    """Where a command's progress goes: stdout, or stderr when stdout carries the JSON object."""
    return _LazyConsole(stderr=as_json)


class TerminalLog:
    """A long command's ``log``: its decisions, and with ``verbosity`` 1 the measurements behind them
    (:func:`transferkit.train.folder.run_log.detail`); with -1 only warnings and what ends it.

    On a terminal a long line wraps between the entries of its lists, never inside one; into a file or
    a pipe each message is one line.
    """

    _ALWAYS = ("warning", "error", "interrupted")

    def __init__(self, as_json: bool = False, verbosity: int = 0, indent: str = ""):
        self.console = output_console(as_json)
        self.verbosity = verbosity
        self.indent = indent

    def __call__(self, message: str) -> None:
        if self.verbosity >= 0 or str(message).startswith(self._ALWAYS):
            self._print(message)

    def detail(self, message: str) -> None:
        if self.verbosity > 0:
            self._print(message)

    def result(self, message: str) -> None:
        """What the command ends with: shown even with quiet."""
        self._print(message)

    def _print(self, message: str) -> None:
        from .._text import wrap_entries

        text = self.indent + str(message)
        if self.console.is_terminal:
            text = wrap_entries(text, self.console.width, indent=self.indent + "  ")
        self.console.print(text, markup=False, soft_wrap=True)


QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Only warnings and the result on the terminal (train.log has it all).")
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also the measurements behind each decision (as train.log has them).")
]


def verbosity(quiet: bool, verbose: bool) -> int:
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose contradict each other: give one.")
    return -1 if quiet else 1 if verbose else 0


ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="timm name (resnet34), torchvision:NAME, path/to/model.py:factory or package.module:factory.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "--architecture",
        metavar="MODEL",
        help="For weights rather than a run: the MODEL to build (default: the one the file fits, or the record's).",
    ),
]
DataOpt = Annotated[
    str, typer.Option("--data", metavar="DATA", help="Image folder, CSV, WebDataset shards (wds:...) or builtin:NAME.")
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        metavar="WEIGHTS",
        help="Pretrained weights: auto (MODEL's own, as train finds them), none, a file, lite0, timm:TAG, hf-hub:...",
    ),
]
NumClassesOpt = Annotated[
    int | None, typer.Option("--num-classes", metavar="N", min=1, help="Give the model a head for N classes.")
]
InChansOpt = Annotated[
    int | None,
    typer.Option("--in-chans", metavar="N", min=1, help="Input channels (1 for grayscale); RGB weights are adapted."),
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option("--image-size", metavar="PX", min=1, help="Input height and width (default: the model's own)."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="auto (CUDA when present), cpu, cuda or cuda:N.")
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option("--batch-size", metavar="N", min=1, help="Images per batch (default: the fastest measured)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
TtaOpt = Annotated[
    bool,
    typer.Option("--tta", help="Average each image with its mirror image (off: wrong for digits and text)."),
]
TrackOpt = Annotated[
    str,
    typer.Option(
        "--track",
        metavar="TRACKER",
        help="mlflow: add what this writes to the MLflow run the run folder recorded to (none: do not).",
    ),
]
TrackingUriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        metavar="URI",
        help="For --track mlflow: the run's store (default: MLFLOW_TRACKING_URI, else the one in the run folder).",
    ),
]
TrustCodeOpt = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Let a run whose MODEL is file.py:factory or module:factory import and run that code.",
    ),
]


def dry_run_size(model, image_size: int | None) -> tuple[int, int, int] | None:
    """The dry run's (C, H, W) for ``--image-size`` (None: the model's own)."""
    if image_size is None:
        return None
    from ..data.preprocess import input_size_of

    return (input_size_of(model)[0], image_size, image_size)


def note(message: str) -> None:
    """A note the user should see, on stderr so that --json output stays one object."""
    print(f"transferkit: note: {printable(message)}", file=sys.stderr)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=_default) + "\n")


def _default(value: Any):
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def human_count(n: int) -> str:
    return f"{n:,}"
