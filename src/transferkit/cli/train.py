"""``transferkit train``: fine-tune MODEL on DATA with a strategy; resumable."""

from __future__ import annotations

from typing import Annotated

import typer

from ..distributed import is_main_process
from ..engine import TrainConfig, fit
from ._common import InChansOpt, JsonOpt, emit_json, output_console


def train_command(
    model: Annotated[
        str | None, typer.Option("--model", help="MODEL: timm name, torchvision:NAME or file.py:factory.")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Image folder, CSV of path,label, or builtin:NAME.")
    ] = None,
    out: Annotated[str | None, typer.Option("--out", help="Run folder: checkpoints, metrics.csv, TensorBoard.")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="lite0, timm, or a checkpoint file.")] = None,
    strategy: Annotated[
        str, typer.Option("--strategy", help="full, freeze, head, gradual, lp-ft or scratch.")
    ] = "full",
    epochs: Annotated[int, typer.Option("--epochs")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    lr: Annotated[float | None, typer.Option("--lr", help="Main learning rate (default: the strategy's).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Train at this size (default: the weights').")
    ] = None,
    augment: Annotated[str, typer.Option("--augment", help="auto, none, light or standard.")] = "auto",
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Held out when DATA has no val folder.")] = 0.2,
    freeze: Annotated[list[str] | None, typer.Option("--freeze", help="For --strategy head: what to freeze.")] = None,
    unfreeze_last: Annotated[
        int | None, typer.Option("--unfreeze-last", help="For --strategy head: train the last N stages.")
    ] = None,
    train_bn: Annotated[bool, typer.Option("--train-bn", help="Let frozen BatchNorm layers keep training.")] = False,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing")] = 0.1,
    strict_data: Annotated[
        bool, typer.Option("--strict-data", help="Fail before training if any image is unusable.")
    ] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute frozen layers every epoch.")] = False,
    cache_views: Annotated[
        int, typer.Option("--cache-views", help="With augmentation: cache K augmented views of the frozen layers.")
    ] = 0,
    precision: Annotated[str, typer.Option("--precision", help="auto (measured), fp32, bf16 or fp16.")] = "auto",
    channels_last: Annotated[
        bool | None, typer.Option("--channels-last/--no-channels-last", help="Default: measured per model.")
    ] = None,
    in_chans: InChansOpt = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue the run in this folder.")] = None,
    stop_after: Annotated[
        int | None, typer.Option("--stop-after", help="Stop after this many epochs; --resume continues.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a pretrained model on your images with one of the transfer-learning strategies."""
    log_console = output_console(as_json)

    def log(message: str) -> None:
        log_console.print(message, markup=False)

    if resume is None:
        missing = [name for name, value in (("--model", model), ("--data", data), ("--out", out)) if value is None]
        if missing:
            raise typer.BadParameter(f"{', '.join(missing)} required (or --resume DIR).")
        config = TrainConfig(
            model=model,
            data=data,
            out=out,
            weights=weights,
            strategy=strategy,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            image_size=image_size,
            augment=augment,
            val_fraction=val_fraction,
            freeze=list(freeze or []),
            unfreeze_last=unfreeze_last,
            train_bn=train_bn,
            label_smoothing=label_smoothing,
            strict_data=strict_data,
            cache=not no_cache,
            cache_views=cache_views,
            precision=precision,
            channels_last=channels_last,
            in_chans=in_chans,
        )
        summary = fit(config, stop_after=stop_after, log=log)
    else:
        summary = fit(resume=resume, stop_after=stop_after, log=log)
    if not is_main_process():
        return
    if as_json:
        emit_json(summary)
    else:
        log_console.print(
            f"best val_acc {summary['best_val_acc']:.4f}; {summary['trainable_params']:,} trainable, "
            f"{summary['frozen_params']:,} frozen parameters; {summary['seconds']:.0f} s; run in {summary['out']}"
        )
