"""The epochs of one phase: train, validate, keep the best and the last checkpoint, stop on divergence or
patience (:func:`run_phase`), over what :func:`~transferkit.train.phases.phase.prepare_phase` built."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn as nn

from ...errors import RunError
from ...tasks.scores import monitored
from ..folder.run_folder import RunRecord, checkpoint_state, save_checkpoint, write_metrics
from ..folder.tracking import Trackers
from ..parallel.distributed import DistContext, make_loader
from ..parallel.sharding import gather_state, is_sharded
from ..rng import seed_everything
from ..strategies import Phase
from .loop import train_one_epoch
from .phase import PhaseSetup, prepare_phase, settle_trial, settle_validation_trial
from .validation import validate

__all__ = ["Clock", "run_phase"]


def run_phase(
    record: RunRecord,
    model: nn.Module,
    phase: Phase,
    phase_index: int,
    *,
    first_epoch: int,
    epoch_index: int,
    resumed: dict | None,
    device: torch.device,
    dist_ctx: DistContext,
    probe,
    clock: Clock,
    trackers: Trackers,
    stop_after: int | None,
    log,
) -> int:
    """Train one phase from ``first_epoch``; returns the run's epoch count after it."""
    config = record.config
    setup = prepare_phase(
        record,
        model,
        phase,
        first_epoch=first_epoch,
        resumed=resumed,
        device=device,
        dist_ctx=dist_ctx,
        probe=probe,
        log=log,
    )
    for phase_epoch in range(first_epoch, phase.epochs):
        epoch_started = time.perf_counter()
        lr_now = setup.step.optimizer.param_groups[-1]["lr"]
        progress = f"epoch {epoch_index + 1}/{config.epochs}"
        epochs_left = phase.epochs - phase_epoch - 1
        train_loss = _train(setup, record, model, epoch_index, epochs_left, device=device, dist_ctx=dist_ctx, log=log)
        if not math.isfinite(train_loss):
            _diverged(record, epoch_index + 1, phase, "training")
        checked = _validate(setup, record, model, progress, device=device, dist_ctx=dist_ctx, log=log)
        if not math.isfinite(checked.loss):
            _diverged(record, epoch_index + 1, phase, "validation")
        # The first epoch of a phase carries the cost of computing the cache.
        seconds = time.perf_counter() - (setup.inputs.started if phase_epoch == 0 else epoch_started)
        epoch_index += 1
        row = {
            "epoch": epoch_index,
            "phase": phase.name,
            "train_loss": train_loss,
            "val_loss": checked.loss,
            **checked.scores,
            "lr": lr_now,
            "seconds": seconds,
            "cached": setup.inputs.cached is not None,
            "cumulative_seconds": clock.elapsed(),
        }
        improved = _keep(record, row, checked, phase, log)
        stale = _epochs_without_progress(record, phase)
        record.phase_complete = config.patience is not None and stale >= config.patience
        if record.phase_complete and phase_epoch + 1 < phase.epochs:
            log(f"phase {phase.name} ends early: no better {record.monitor} in {stale} epochs (patience)")
        _save(setup, record, model, (phase_index, phase_epoch), improved=improved, dist_ctx=dist_ctx, trackers=trackers)
        if record.phase_complete:
            return epoch_index + (phase.epochs - phase_epoch - 1)  # the skipped epochs still count
        if stop_after is not None and epoch_index >= stop_after:
            break
    return epoch_index


def _train(
    setup: PhaseSetup, record: RunRecord, model: nn.Module, epoch_index: int, epochs_left: int, *, device, dist_ctx, log
) -> float:
    """One epoch's training on the views of the phase (cycled by epoch), seeded by the run's seed and the epoch;
    returns the mean loss. A kernel trial that ran on it is settled after."""
    config = record.config
    seed = config.seed * 1000 + epoch_index
    seed_everything(seed)
    views, step, kernels = setup.inputs.train_views, setup.step, setup.kernels
    train_loader = make_loader(
        views[epoch_index % len(views)],
        batch_size=config.batch_size,
        shuffle=True,
        seed=seed,
        dist_ctx=dist_ctx,
        drop_last=setup.inputs.drop_last,
        sample_weights=step.sample_weights,
    )
    with setup.inputs.skipping():
        train_loss = train_one_epoch(
            step.train_net,
            train_loader,
            step.optimizer,
            step.scheduler,
            prep=kernels.prep,
            device=device,
            label_smoothing=config.label_smoothing,
            class_weights=step.class_weights,
            mix=setup.inputs.mix,
            precision=kernels.path.precision,
            scaler=step.scaler,
            dist_ctx=dist_ctx,
            progress=f"epoch {epoch_index + 1}/{config.epochs}",
            trial=kernels.trial,
            loss_fn=step.loss_fn,
            log=log,
        )
        if kernels.trial is not None:
            settle_trial(setup, record, model, epochs_left=epochs_left, device=device, log=log)
    return train_loss


def _validate(setup: PhaseSetup, record: RunRecord, model: nn.Module, progress: str, *, device, dist_ctx, log):
    """The epoch's validation, in the inference kernels' memory format (or the trial's, which settles after)."""
    kernels = setup.kernels
    path, val_path, val_trial = kernels.path, kernels.val_path, kernels.val_trial
    with setup.inputs.skipping():
        if val_trial is None and val_path.channels_last != path.channels_last:  # a trial sets each batch's itself
            model.to(memory_format=torch.channels_last if val_path.channels_last else torch.contiguous_format)
        checked = validate(
            setup,
            record,
            device=device,
            dist_ctx=dist_ctx,
            precision=val_path.precision,
            trial=val_trial,
            progress=f"{progress}, validation",
            log=log,
        )
        if val_trial is not None:
            val_path = settle_validation_trial(setup, record, device=device, dist_ctx=dist_ctx, log=log)
        if val_trial is not None or val_path.channels_last != path.channels_last:
            model.to(memory_format=torch.channels_last if path.channels_last else torch.contiguous_format)
    return checked


def _keep(record: RunRecord, row: dict, checked, phase: Phase, log) -> bool:
    """The epoch's row in the history, kept as the best where its monitored score is; logged. Whether it is."""
    config = record.config
    record.history.append(row)
    improved = record.best is None or monitored(row, record.monitor) > monitored(record.best, record.monitor)
    if improved:
        record.best = row
        record.best_metrics = checked.details
        record.best_outputs = checked.outputs
    log(
        f"epoch {row['epoch']}/{config.epochs} [{phase.name}] train_loss {row['train_loss']:.4f} "
        f"val_loss {checked.loss:.4f} {checked.text} ({row['seconds']:.1f} s)" + (" *" if improved else "")
    )
    if len(record.history) == 1:  # the mark explained once, on a run's first epoch
        by = f"validation {record.monitor}"
        log(f"(* marks an epoch better than every earlier one by {by}: best.pt holds the last)")
    return improved


def _save(setup: PhaseSetup, record: RunRecord, model, at: tuple[int, int], *, improved: bool, dist_ctx, trackers):
    """last.pt, and best.pt where the epoch improved, metrics.csv and the trackers (the main process);
    ``at`` is (phase index, epoch within the phase). Every rank gathers a sharded model's state."""
    step = setup.step
    gathered = gather_state(model, step.optimizer) if is_sharded(model) else None  # every rank takes part
    if not dist_ctx.is_main:
        return
    checkpoint = checkpoint_state(
        record,
        model,
        optimizer=step.optimizer,
        scheduler=step.scheduler,
        scaler=step.scaler,
        phase_index=at[0],
        phase_epoch=at[1],
        gathered=gathered,
    )
    out = Path(record.config.out)
    save_checkpoint(out / "last.pt", checkpoint)
    if improved:
        save_checkpoint(out / "best.pt", checkpoint)
    write_metrics(out / "metrics.csv", record.history, record.data.task)
    trackers.epoch(record.history[-1], record.history[-1]["epoch"])


def _epochs_without_progress(record: RunRecord, phase: Phase) -> int:
    """Epochs of this phase since the monitored value last improved (all of them, if it did not here)."""
    rows = [row for row in record.history if row["phase"] == phase.name]
    best = record.best["epoch"] if record.best else 0
    return sum(1 for row in rows if row["epoch"] > best)


def _diverged(record: RunRecord, epoch: int, phase: Phase, what: str) -> None:
    """Stop a run whose loss became NaN or infinite; its checkpoints stay those of the last good epoch."""
    if record.history:
        best = record.best["epoch"]
        kept = f"best.pt (epoch {best}) and last.pt (epoch {record.history[-1]['epoch']}) are kept"
    else:
        kept = "no checkpoint was written"
    raise RunError(
        f"Training diverged in epoch {epoch}: the {what} loss is not finite; {kept}. "
        f"Lower lr (phase {phase.name} used {phase.lr:g}), or check the weights and data for NaN or extreme values.",
        argument="lr",
    )


class Clock:
    """Seconds of training in the whole run, across resumptions."""

    def __init__(self, before: float):
        self.before = before
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started
