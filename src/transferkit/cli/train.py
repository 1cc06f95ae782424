"""``transferkit train``: fine-tune MODEL on DATA with a strategy; resumable."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, QuietOpt, TerminalLog, TrustCodeOpt, VerboseOpt, emit_json, verbosity
from ._config_options import config_options


@config_options(
    skip=["model"],
    defaults={"data": None, "out": None, "strategy": "auto"},
    help={
        "strategy": "One of the strategies, or auto (the default): the one advise's linear probes recommend, "
        "said in the log and kept in the run.",
        "data": "Image folder, CSV of path,label, or builtin:NAME. Required unless --resume.",
        "out": "Run folder: checkpoints, metrics.csv, report.json, TensorBoard. Required unless --resume.",
    },
)
def train_command(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODEL]",
            help="timm name, torchvision:NAME, path/to/model.py:factory or module:factory. Required unless --resume.",
            show_default=False,
        ),
    ] = None,
    model_option: Annotated[
        str | None,
        typer.Option("--model", metavar="MODEL", help="MODEL given as an option, as timm's train.py takes it."),
    ] = None,
    resume: Annotated[str | None, typer.Option("--resume", metavar="DIR", help="Continue the run in DIR.")] = None,
    config_file: Annotated[
        str | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Settings from a JSON file (sweep's best_config.json); options typed here win.",
        ),
    ] = None,
    stop_after: Annotated[
        int | None,
        typer.Option("--stop-after", metavar="N", help="Stop after N epochs of the run; --resume continues."),
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", hidden=True)] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace the run in --out, or write into a folder that holds other files."),
    ] = False,
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    *,
    settings: dict,
) -> None:
    """Fine-tune a pretrained model on your images with one of the transfer-learning strategies."""
    from ..advice.auto import fit
    from ..errors import ConfigError
    from ..train.config import TrainConfig
    from ..train.parallel.distributed import is_main_process

    log = TerminalLog(as_json, verbosity(quiet, verbose))
    if workers is not None:
        raise ConfigError(
            "--workers: there are no loader workers to set: the images are decoded once before training, by a thread "
            "per core this process may use (8 at most; streamed images by up to 4 processes); to use fewer cores, run "
            "under taskset."
        )
    if model_option is not None:
        if model is not None and model != model_option:
            raise ConfigError(f"MODEL is '{model}' and --model '{model_option}': give one of them.")
        model = model_option
    typed = {k for k in settings if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
    if config_file is not None:
        model, settings = _with_config_file(config_file, model, settings, typed)
    if resume is None:
        given = (("MODEL", model), ("--data", settings["data"]), ("--out", settings["out"]))
        missing = [name for name, value in given if value is None]
        if missing:
            raise typer.BadParameter(f"{', '.join(missing)} required (or --resume DIR).")
        summary = fit(TrainConfig(model=model, **settings), overwrite=overwrite, stop_after=stop_after, log=log)
    else:
        # Only what was typed is compared with the run; defaults are the run's own.
        changes = {k: settings[k] for k in typed}
        if model is not None:
            changes["model"] = model
        summary = fit(resume=resume, changes=changes, trust_code=trust_code, stop_after=stop_after, log=log)
    if not is_main_process():
        return
    if as_json:
        emit_json(summary)
    else:
        log.result(_result_line(summary))


def _with_config_file(config_file: str, model: str | None, settings: dict, typed: set[str]) -> tuple:
    """MODEL and the settings with a JSON file's in place of the defaults; options typed win over the file."""
    from ..train.config import read_config_file

    stored = read_config_file(config_file)
    model = model if model is not None else stored.pop("model", None)
    stored.pop("model", None)
    return model, {**settings, **stored, **{k: settings[k] for k in typed}}


def _result_line(summary: dict) -> str:
    from ..model.factory import is_code_spec

    classes = summary["task"] == "classification"
    best = {"name": "val_acc", "value": summary["best_val_acc"]} if classes else summary["best_score"]
    random = summary["weights"] is None and not is_code_spec(summary["model"])
    return (
        f"best {best['name']} {best['value']:.4f}{' from random weights' if random else ''}; "
        f"{summary['trainable_params']:,} trainable, "
        f"{summary['frozen_params']:,} frozen parameters; {summary['seconds']:.0f} s; run in {summary['out']}"
    )
