"""The ``transferkit`` entry point: commands registered lazily, user errors turned into one line.

A command's module is imported only when that command runs or shows its help, and command
modules import the library (torch, timm, torchvision) inside their functions: ``transferkit
--help`` and ``transferkit CMD --help`` answer without loading torch.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from .. import __version__
from .._text import one_line
from ..errors import Interrupted, TransferkitError
from ._common import CONTEXT, LIBRARY_ARGUMENTS, flag_for, printable

__all__ = ["COMMANDS", "app", "main"]

USER_ERROR = 2

# name: (module under transferkit.cli, function, one line for the command list)
COMMANDS = {
    "demo": ("demo", "demo_command", "Transfer learning end to end on real weights and data (the default job)."),
    "weights": ("weights", "weights_command", "List the known pretrained weights and which are installed."),
    "inspect": ("inspect", "inspect_command", "Show the module tree, output shapes, parameters and values."),
    "identify": ("identify", "identify_command", "Find the architectures a checkpoint fits, by names or structure."),
    "load": ("load", "load_command", "Load weights into MODEL and report what matched, and what did not."),
    "plan": ("plan", "plan_command", "Show what freezing leaves trainable and what the optimizer receives."),
    "surgery": ("surgery", "surgery_command", "Replace layers by path and validate the network with a dry run."),
    "train": ("train", "train_command", "Fine-tune MODEL on DATA with a strategy; resumable."),
    "advise": ("advise", "advise_command", "Recommend a strategy from linear probes at several depths, in seconds."),
    "sweep": ("sweep", "sweep_command", "Search the head's lr, weight decay and smoothing on cached features."),
    "compare": ("compare", "compare_command", "Train several strategies on one split and compare them."),
    "lr-find": ("lr_find", "lr_find_command", "The learning-rate range test: a plot and a suggested rate."),
    "eval": ("eval", "eval_command", "Evaluate a run: accuracy, per-class accuracy, confusion matrix."),
    "export": ("export", "export_command", "Export a run (ONNX, torch.export, safetensors, timm Hub folder), proven."),
    "push": ("push", "push_command", "Upload a run to the Hugging Face Hub as a folder timm loads."),
    "predict": ("predict", "predict_command", "Classify image files with a run or registry weights."),
    "serve": ("serve", "serve_command", "Serve a run or export over HTTP, with batching, limits and metrics."),
    "shard": ("shard", "shard_command", "Write DATA as WebDataset tar shards with an index, to train from."),
}


class LazyGroup(TyperGroup):
    """A group whose commands are built from their modules only when one is asked for."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        module, function, summary = COMMANDS[name]
        callback = getattr(importlib.import_module(f".{module}", __package__), function)
        single = typer.Typer(pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)
        single.command(name, short_help=summary, context_settings=CONTEXT)(callback)
        return typer.main.get_command(single)

    def format_commands(self, ctx, formatter) -> None:
        # The listing uses the summaries above, so that --help imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])


app = typer.Typer(
    name="transferkit",
    cls=LazyGroup,
    help="Transfer learning for PyTorch image classifiers: load, freeze, replace and inspect, every step checked.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)


def _show_version(value: bool) -> None:
    if value:
        print(f"transferkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_show_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Download nothing: weights come from the caches only (as HF_HUB_OFFLINE=1)."),
    ] = False,
) -> None:
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read by transferkit.weights.hub at each fetch


_SIGNALS = {signal.SIGINT: ("SIGINT", 130), signal.SIGTERM: ("SIGTERM", 143)}  # the shell's exit codes for them


_OWNER = [0]  # the process that runs the command; forked loader workers inherit the handler but not the role


def _on_signal(signum, frame):
    if os.getpid() != _OWNER[0]:  # a forked worker: what Python and the system would do
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Interrupted(*_SIGNALS[signum])


def main() -> None:
    """Run the CLI; every error ends in one line on stderr.

    A :class:`TransferkitError` (bad input) or an ``OSError`` (the file system refused) exits 2
    (a :class:`~transferkit.errors.ParityError`, an export that computes something else, 1);
    anything else is a bug, reported in one line with how to see its traceback, exit 1.
    ``TRANSFERKIT_DEBUG=1`` lets every exception through with its traceback.
    """
    debug = os.environ.get("TRANSFERKIT_DEBUG") == "1"
    # typer would end a KeyboardInterrupt silently with 130; this one reaches the run and the line below
    _OWNER[0] = os.getpid()
    previous = {signum: signal.signal(signum, _on_signal) for signum in _SIGNALS}
    _SHOWN[0], warnings.showwarning = warnings.showwarning, _show_warning
    try:
        app(prog_name="transferkit")
    except TransferkitError as e:
        if debug:
            raise
        _fail(f"error: {user_message(e)}", e.exit_code)
    except OSError as e:
        if debug:
            raise
        where = f" '{e.filename}'" if e.filename else ""
        _fail(f"error: {e.strerror or e}{where}. Check the path and its permissions.", USER_ERROR)
    except (Interrupted, KeyboardInterrupt) as e:
        code = e.exit_code if isinstance(e, Interrupted) else 130
        _fail("interrupted; files written so far are complete (each is written atomically).", code)
    except Exception as e:
        if debug:
            raise
        lost = _lost_peer(e)
        if lost:
            _fail(
                f"error: another process of this distributed run stopped ({lost}); its node's log says why. "
                "The run folder keeps the last finished epoch: start every node again with --resume DIR.",
                1,
            )
        text = one_line(e, 300)
        _fail(f"internal error: {type(e).__name__}: {text}. Run with TRANSFERKIT_DEBUG=1 for the traceback.", 1)
    finally:
        warnings.showwarning = _SHOWN[0]
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        # The interpreter's last garbage collection walks every object torch, timm and scikit-learn
        # made at import: 1.0 s of a 15 s run. Everything is written and closed by now; frozen
        # objects are left to the operating system.
        gc.freeze()


_PACKAGE = Path(__file__).resolve().parents[1]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The library's own warnings as one line naming options; any other the way Python shows it."""
    if issubclass(category, UserWarning) and Path(filename).resolve().is_relative_to(_PACKAGE):
        print(f"transferkit: warning: {printable(_as_flags(str(message)))}", file=sys.stderr)
    else:
        _SHOWN[0](message, category, filename, lineno, file, line)


_SHOWN = [warnings.showwarning]  # how warnings were shown before main


def _lost_peer(error: Exception) -> str | None:
    """The peer's failure a collective reported under torchrun, or None (torch.distributed not in use)."""
    if "torch.distributed" not in sys.modules:
        return None
    from ..train.parallel.distributed import lost_peer

    return lost_peer(error)


def _fail(message: str, code: int) -> None:
    # Names with bytes that are not UTF-8 are shown escaped (\xff), never as an encoding error.
    print(f"transferkit: {printable(message)}", file=sys.stderr)
    if "--json" in sys.argv[1:]:  # a script reading stdout learns why, too
        kind, _, text = printable(message).partition(": ")
        print(json.dumps({"error": text, "kind": kind, "exit_code": code}))
    sys.exit(code)


def user_message(error: TransferkitError) -> str:
    """The error on one line, with the library's argument names written as this CLI's flags."""
    message = one_line(error)
    named = (error.argument,) if isinstance(error.argument, str) else error.argument or ()
    for argument in named:
        # Not inside a path or a quoted name: '/data/lr/' keeps its 'lr'.
        message = re.sub(rf"(?<![\w./'-]){re.escape(argument)}(?![\w/'-])", flag_for(argument), message, count=1)
    return _as_flags(message)


def _as_flags(message: str) -> str:
    """The library settings ``message`` names in snake_case written as options (unfreeze_last -> --unfreeze-last)."""
    return re.sub(
        r"(?<![\w./'-])([a-z]+(?:_[a-z]+)+)\b(?![\w'(])",
        lambda m: flag_for(m.group(1)) if m.group(1) in LIBRARY_ARGUMENTS else m.group(1),
        message,
    )
