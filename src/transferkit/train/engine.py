"""``fit``: run a strategy's phases over the loop, writing the run folder as it goes.

Where a phase trains only the layers after a frozen, deterministic prefix, the prefix's output
is computed once (:mod:`transferkit.train.phase_cache`) and the rest is trained on it instead of
re-running the frozen network every epoch.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from ..adapters.lora import peft_model_of
from ..data.preprocess import Preprocessing, legacy_note
from ..data.sources import open_data
from ..errors import ConfigError, Interrupted, RunError
from ..model.factory import code_origin, is_code_spec, is_object_spec
from ..model.surgery import find_head
from ..serialization import write_json
from .balance import choose_balance
from .config import TrainConfig
from .distributed import DistContext, init_from_env, make_loader
from .fastpath import FastPath, choose_fast_path, resolve_device
from .finish import finish_run
from .kernel_trial import InferenceTrial
from .loop import train_one_epoch
from .lr_find import find_lr
from .metrics import monitored
from .out_folder import EXPORT_FILES, REPORT_FILES, check_out, claim_out, clear_run, remove_leftovers
from .phase import log_fast, prepare_phase, settle_trial, settle_validation_trial
from .resume import check_same_data, resumed_config
from .rng import seed_everything
from .run_folder import (
    RunRecord,
    check_model_code,
    checkpoint_state,
    load_model_state,
    load_run,
    save_checkpoint,
    write_metrics,
)
from .run_log import RunLog
from .setup import (
    Kernels,
    PreparedData,
    attach_adapters,
    backbone_facts,
    build_model,
    check_stream,
    choose_weights,
    prepare_data,
    preprocessing_for,
    task_of_data,
)
from .sharding import gather_state, is_sharded
from .strategies import Phase
from .tracking import Trackers, check_store, start_trackers
from .validation import validate

__all__ = ["fit"]


def fit(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    changes: dict | None = None,
    trust_code: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    data: PreparedData | None = None,
    kernels: Kernels | None = None,
    module: nn.Module | None = None,
) -> dict:
    """Train a run, or continue one from ``resume``; returns the summary also written to ``report.json``.

    Args:
        resume: a run folder to continue, where it is now (a copied or moved run continues in place).
        changes: with ``resume``, settings given again; see :func:`~transferkit.train.resume.resumed_config`.
        trust_code: with ``resume``, let a run whose MODEL is the user's code import it.
        overwrite: replace the run in ``config.out``, or write into a folder that holds other files.
        stop_after: stop once this many epochs (of the whole run) are done; ``resume`` continues.
        data: DATA already decoded for this config (see :func:`~transferkit.train.setup.prepare_data`).
        kernels: kernels already measured for this model; filled in here where missing, so that
            runs sharing the object measure once.
        module: the network to train, as given from Python (``config.model`` is its
            :func:`~transferkit.model.factory.object_spec`): no weights are loaded into it, its head stays.

    Examples:
        >>> fit(TrainConfig(model="tf_efficientnet_lite0", weights="lite0", data="builtin:digits",
        ...                 strategy="freeze", epochs=3, image_size=64, out="runs/probe"))["best_val_acc"]
        0.93...
    """
    if stop_after is not None and stop_after < 1:
        raise ConfigError(
            f"stop_after must be at least 1 (epochs of the run to train before stopping), got {stop_after}.",
            argument="stop_after",
        )
    dist_ctx = init_from_env()
    state = None
    if resume is not None:
        # Every rank reads the run where each has it (a shared filesystem); else rank 0 sends it.
        if dist_ctx.everyone((Path(resume) / "last.pt").is_file()):
            state = load_run(resume)
        else:
            state = dist_ctx.main_reads(lambda: load_run(resume))
        check_model_code(state, resume, trust_code=trust_code, same_code=True)
        config = resumed_config(state, Path(resume), changes)
    if config is None:
        raise ConfigError("fit needs a TrainConfig or a run folder to resume.")
    weights_note, task_note = None, None
    if state is None:  # a resumed run has its weights in last.pt, and its task in its config
        config, weights_note = choose_weights(config)
        config, task_note = task_of_data(config)
    out = Path(config.out)
    _check_same_settings(config, stop_after, dist_ctx)
    dist_ctx.main_reads(lambda: check_out(out, resume=state is not None, overwrite=overwrite))
    # DATA and MODEL are opened before the run folder is made: a bad one leaves nothing behind.
    source = None if data is not None else open_data(config.data, config.label_spec(), config.hf_options())
    if source is not None:
        check_stream(config, source)
    if state is not None:
        check_same_data(state, source if source is not None else data, config.data)
    seed_everything(config.seed)  # random initialisation (scratch, new layers) follows the seed too
    num_classes = len((data or source).class_names)
    if module is not None:
        model, load_report = module, None
        if peft_model_of(module) is None:
            attach_adapters(module, config)  # lora and dora add theirs to the module given
    else:
        model, load_report = build_model(config, num_classes, load_weights=state is None)
    if dist_ctx.is_main:
        check_store(config, out)  # a tracking server that does not answer: before the folder is made
    lock = claim_out(out) if dist_ctx.is_main else None
    run_log = RunLog(out, log) if dist_ctx.is_main else None  # every line, and every measurement, in train.log
    try:
        if lock is not None:
            remove_leftovers(out)
            if state is None and overwrite:
                clear_run(out)
        dist_ctx.barrier()
        return _fit(
            config,
            state,
            dist_ctx,
            source=source,
            model=model,
            load_report=load_report,
            weights_note=weights_note,
            task_note=task_note,
            stop_after=stop_after,
            log=run_log or log,
            data=data,
            kernels=kernels,
        )
    finally:
        if run_log is not None:
            run_log.close()
        if lock is not None:
            lock.release()


def _check_same_settings(config: TrainConfig, stop_after: int | None, dist_ctx: DistContext) -> None:
    """Every process of a distributed run was started with rank 0's settings (each node's ``out`` aside).

    Processes that train for different epochs or on other data would wait for each other forever.
    """
    if not dist_ctx.enabled:
        return
    ours = {**config.to_dict(), "out": None, "stop_after": stop_after}
    main = dist_ctx.from_main(ours)
    different = sorted(k for k in ours if ours[k] != main.get(k))
    if not dist_ctx.everyone(not different):
        named = f": {', '.join(different)} differ from rank 0's" if different else " on another node"
        raise ConfigError(
            f"This distributed run's processes were started with different settings{named}. "
            "Start every node with the same command; only --out may differ."
        )


def _fit(
    config: TrainConfig,
    state: dict | None,
    dist_ctx: DistContext,
    *,
    source,
    model: nn.Module,
    load_report: dict | None,
    weights_note: str | None,
    stop_after: int | None,
    task_note: str | None = None,
    log: Callable[[str], None],
    data: PreparedData | None,
    kernels: Kernels | None,
) -> dict:
    if not dist_ctx.is_main:
        log = _silent
    device = resolve_device(config.device, local_rank=dist_ctx.local_rank if dist_ctx.enabled else None)
    phases = None if config.strategy == "auto" else config.phases()
    out = Path(config.out)

    if state is None:  # the first line says where the weights came from
        _log_weights(config, model, load_report, weights_note, log)
    if task_note:
        log(task_note)
    if data is None:
        recorded = Preprocessing.from_dict(state["preprocessing"]) if state else None  # a resumed run keeps its own
        if state and (note := legacy_note(state["preprocessing"])):
            log(f"note: {note}")
        data = prepare_data(config, source=source, model=model, preprocessing=recorded, log=log)
    elif data.spec != config.data or (
        not is_object_spec(config.model) and data.preprocessing != preprocessing_for(config, model)
    ):
        raise ValueError("fit was given data prepared for another DATA or preprocessing than its config's.")
    advice = (state or {}).get("advice")
    if config.strategy == "auto":
        from ..advice.auto import choose_strategy

        config, advice = choose_strategy(config, model, data, write=dist_ctx.is_main, log=log)
        phases = config.phases()
        seed_everything(config.seed)  # the probe drew random numbers; the run starts as a chosen one would
    if config.lr == "auto":
        found = find_lr(config, data=data, log=log)
        config = replace(config, lr=found["suggestion"])  # the run records the rate it used
        phases = config.phases()
        log(f"lr auto: training at {config.lr:.2e}, the range test's suggestion (lr_find.png)")
        seed_everything(config.seed)
    model = model.to(device)
    record = RunRecord(config, data, kernels or Kernels(), find_head(model), load_report)
    record.advice = advice
    record.backbone = backbone_facts(config, model)
    record.model_code = (state or {}).get("model_code") or code_origin(config.model)
    choose_balance(record, state, log, distributed=dist_ctx.enabled)
    probe = _measure_kernels(record, model, device, saved=state or {}, log=log, dist_ctx=dist_ctx)
    start_phase, start_epoch = 0, 0
    if state is not None:
        load_model_state(model, state, out)
        record.history, record.best_metrics = state["history"], state.get("best_metrics")
        best_epoch = state.get("best_epoch")
        record.best = next((row for row in record.history if row["epoch"] == best_epoch), None)
        start_phase, start_epoch = state["phase"], state["phase_epoch"] + 1
        if start_epoch >= phases[start_phase].epochs or state.get("phase_complete"):
            start_phase, start_epoch = start_phase + 1, 0
        log(f"resuming {out} after epoch {state['epoch']} (phase {phases[min(start_phase, len(phases) - 1)].name})")
        before = state["config"].get("epochs")
        if before != config.epochs:
            log(
                f"extended from {before} to {config.epochs} epochs: the last phase's learning-rate schedule runs "
                f"over {phases[-1].epochs} epochs from where it stood"
            )
        if dist_ctx.is_main:
            _retire_reports(out, log)
    if dist_ctx.is_main:  # on resuming too: the folder may have moved, epochs or device changed
        write_json(out / "config.json", config.to_dict())

    trackers = start_trackers(config, out, main=dist_ctx.is_main, log=log)
    epoch_index = sum(p.epochs for p in phases[:start_phase]) + start_epoch
    clock = _Clock(record.history[-1]["cumulative_seconds"] if record.history else 0.0)
    stopped, status = False, "FAILED"
    try:
        for phase_index in range(start_phase, len(phases)):
            resumed = state if phase_index == start_phase and start_epoch > 0 else None
            epoch_index = _run_phase(
                record,
                model,
                phases[phase_index],
                phase_index,
                first_epoch=start_epoch if phase_index == start_phase else 0,
                epoch_index=epoch_index,
                resumed=resumed,
                device=device,
                dist_ctx=dist_ctx,
                probe=probe,
                clock=clock,
                trackers=trackers,
                stop_after=stop_after,
                log=log,
            )
            if stop_after is not None and epoch_index >= stop_after:
                stopped = True
                break
        # Only when every rank got here: a rank that failed must not leave the others waiting.
        dist_ctx.barrier()
        result = finish_run(record, model, stopped=stopped, main=dist_ctx.is_main, log=log)
        if state is not None and dist_ctx.is_main:
            _note_old_exports(out, state.get("best_epoch"), record.best, log)
        trackers.finished(out)
        status = "KILLED" if stopped else "FINISHED"  # stopped: to be resumed, which reopens it
        return result
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C, or SIGINT and SIGTERM as the command line raises them
        status = "KILLED"
        if dist_ctx.is_main:
            log(_interrupted(config.epochs, out))
        raise
    finally:
        trackers.close(status)


def _log_weights(config: TrainConfig, model: nn.Module, load_report: dict | None, note: str | None, log) -> None:
    """Where the weights came from (``note``: what auto found): what loaded, with the verification's warnings,
    or that none did."""
    if load_report is not None:
        how = ", ".join(f"{n} by {k}" for k, n in load_report["how"].items())
        source = f"{config.weights} ({note})" if config.weights and note else config.weights
        log(
            f"weights: {source or getattr(model, 'transferkit_weights', None)}: "
            f"{len(load_report['matched'])} tensors loaded, "
            f"{load_report['loaded_fraction']:.1%} of parameters ({how}); head '{find_head(model)}' is new"
        )
        for finding in load_report["verification"]["findings"]:
            log(f"warning: weights: {finding['message']}")
    elif is_object_spec(config.model):
        given = config.model.rpartition(".")[2]
        log(f"weights: the module's own: transferkit loads none into the {given} it was given")
    elif config.strategy != "scratch":
        log(_random_start(config, note))


def _random_start(config: TrainConfig, note: str | None) -> str:
    """The line of a run that loads no weights: a timm or torchvision MODEL starts from random values, a
    factory of the user's from what it made."""
    if is_code_spec(config.model):  # the user's factory may load weights of its own
        if note:  # auto
            return f"weights: {note}"
        return f"weights: none: transferkit loads none into {config.model}, which trains from what its factory made"
    consequence = {
        "full": "full trains it from scratch",
        "auto": "strategy auto judges random features",
    }.get(config.strategy, f"strategy {config.strategy} builds on random features")
    if note:  # auto found none, and the strategy is one that may go on
        return (
            f"warning: weights: {note}; {config.model} starts from random "
            f"values and {consequence}; name pretrained ones with --weights (a file, timm:TAG, hf-hub:ORG/REPO, "
            "a URL)"
        )
    return f"warning: weights: none: {config.model} starts from random values and {consequence}"


def _retire_reports(out: Path, log) -> None:
    """A resumed run removes the report page that ``eval`` wrote of it before: it would show the run as it was."""
    found = [name for name in REPORT_FILES if (out / name).is_file()]
    for name in found:
        (out / name).unlink()
    if found:
        log(
            f"removed {', '.join(found)}: written before this resume, they showed the run as it was; "
            f"transferkit eval {shlex.quote(str(out))} writes them again"
        )


def _note_old_exports(out: Path, best_before: int | None, best: dict | None, log) -> None:
    """Exports in the run folder are of best.pt as it was: said when the resumed run chose another."""
    found = [name for name in EXPORT_FILES if (out / name).exists()]
    if found and best is not None and best["epoch"] != best_before:
        log(
            f"warning: {', '.join(found)} {'is' if len(found) == 1 else 'are'} of best.pt before this resume "
            f"(epoch {best_before}); best.pt is now epoch {best['epoch']}'s: export again"
        )


def _interrupted(total: int, out: Path) -> str:
    """What an interrupted run leaves and how to go on, from last.pt itself: the signal may have come between its
    write and anything that would record it."""
    try:  # memory-mapped: the epoch is read, the tensors are not
        held = int(torch.load(out / "last.pt", map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except (OSError, RuntimeError, KeyError, ValueError, TypeError):
        held = 0
    if not held:
        return f"interrupted before the first epoch ended: {out} holds no checkpoint; start the run again"
    return (
        f"interrupted: {out / 'last.pt'} holds epoch {held} of {total}; go on with: "
        f"transferkit train --resume {shlex.quote(str(out))}"
    )


def _measure_kernels(
    record: RunRecord, model: nn.Module, device: torch.device, *, saved: dict, log, dist_ctx: DistContext
):
    """Fill in the inference kernels, or the trial that chooses them on the first inference batches; return
    the probe that measures training kernels when first needed.

    A resumed run keeps the kernels it chose, so that resuming is exact.
    """
    config, kernels, data = record.config, record.kernels, record.data
    probe = partial(
        choose_fast_path,
        model,
        data.preprocessing.input_size,
        device=device,
        batch_size=min(config.batch_size, 64),
        channels_last=config.channels_last,
        precision=config.pinned_precision,
        reprobe=config.reprobe,
    )
    if saved.get("fast_path_inference"):
        kernels.inference = FastPath(**saved["fast_path_inference"])
    elif kernels.inference is None and kernels.inference_trial is None:
        # Batches larger than the data would never run: they are not measured.
        largest = max(len(data.train), len(data.val))
        sizes = {"batch_size": min(config.batch_size, 16), "max_batch_size": min(256, largest)}
        measure = partial(probe, train=False, **sizes)
        # One process times them on the frozen layers' pass, where one comes (measure: where none does);
        # ranks of torchrun must agree first.
        trial = None if dist_ctx.enabled else partial(InferenceTrial, **sizes, fallback=measure)
        chosen = dist_ctx.from_main(measure(trial=trial))
        if isinstance(chosen, InferenceTrial):
            kernels.inference_trial = chosen
        else:
            kernels.inference = chosen
            log_fast(log, "inference (frozen layers, evaluation)", kernels.inference)
    if saved.get("fast_path"):
        kernels.training = FastPath(**saved["fast_path"])
    return probe


def _run_phase(
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
    clock: _Clock,
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
    val_path = setup.val_path
    out = Path(config.out)

    for phase_epoch in range(first_epoch, phase.epochs):
        epoch_started = time.perf_counter()
        seed = config.seed * 1000 + epoch_index
        seed_everything(seed)
        train_loader = make_loader(
            setup.train_views[epoch_index % len(setup.train_views)],
            batch_size=config.batch_size,
            shuffle=True,
            seed=seed,
            dist_ctx=dist_ctx,
            drop_last=setup.drop_last,
            sample_weights=setup.sample_weights,
        )
        lr_now = setup.optimizer.param_groups[-1]["lr"]
        with setup.skipping():
            train_loss = train_one_epoch(
                setup.train_net,
                train_loader,
                setup.optimizer,
                setup.scheduler,
                prep=setup.prep,
                device=device,
                label_smoothing=config.label_smoothing,
                class_weights=setup.class_weights,
                mix=setup.mix,
                precision=setup.path.precision,
                scaler=setup.scaler,
                dist_ctx=dist_ctx,
                progress=f"epoch {epoch_index + 1}/{config.epochs}",
                trial=setup.trial,
                loss_fn=setup.loss_fn,
                log=log,
            )
            if setup.trial is not None:
                settle_trial(setup, record, model, epochs_left=phase.epochs - phase_epoch - 1, device=device, log=log)
            path = setup.path
            if not math.isfinite(train_loss):
                _diverged(record, epoch_index + 1, phase, "training")
            val_trial = setup.val_trial  # sets the memory format of each batch itself
            if val_trial is None and val_path.channels_last != path.channels_last:
                model.to(memory_format=torch.channels_last if val_path.channels_last else torch.contiguous_format)
            checked = validate(
                setup,
                record,
                device=device,
                dist_ctx=dist_ctx,
                precision=val_path.precision,
                trial=val_trial,
                progress=f"epoch {epoch_index + 1}/{config.epochs}, validation",
                log=log,
            )
            if val_trial is not None:
                val_path = settle_validation_trial(setup, record, device=device, dist_ctx=dist_ctx, log=log)
            if val_trial is not None or val_path.channels_last != path.channels_last:
                model.to(memory_format=torch.channels_last if path.channels_last else torch.contiguous_format)
        if not math.isfinite(checked.loss):
            _diverged(record, epoch_index + 1, phase, "validation")
        # The first epoch of a phase carries the cost of computing the cache.
        seconds = time.perf_counter() - (setup.started if phase_epoch == 0 else epoch_started)
        epoch_index += 1
        row = {
            "epoch": epoch_index,
            "phase": phase.name,
            "train_loss": train_loss,
            "val_loss": checked.loss,
            **checked.scores,
            "lr": lr_now,
            "seconds": seconds,
            "cached": setup.cached is not None,
            "cumulative_seconds": clock.elapsed(),
        }
        record.history.append(row)
        improved = record.best is None or monitored(row, record.monitor) > monitored(record.best, record.monitor)
        if improved:
            record.best = row
            record.best_metrics = checked.details
            record.best_outputs = checked.outputs
        log(
            f"epoch {epoch_index}/{config.epochs} [{phase.name}] train_loss {train_loss:.4f} "
            f"val_loss {checked.loss:.4f} {checked.text} ({seconds:.1f} s)" + (" *" if improved else "")
        )
        if len(record.history) == 1:  # the mark explained once, on a run's first epoch
            by = f"validation {record.monitor}"
            log(f"(* marks an epoch better than every earlier one by {by}: best.pt holds the last)")
        stale = _epochs_without_progress(record, phase)
        record.phase_complete = config.patience is not None and stale >= config.patience
        if record.phase_complete and phase_epoch + 1 < phase.epochs:
            log(f"phase {phase.name} ends early: no better {record.monitor} in {stale} epochs (patience)")
        gathered = gather_state(model, setup.optimizer) if is_sharded(model) else None  # every rank takes part
        if dist_ctx.is_main:
            checkpoint = checkpoint_state(
                record,
                model,
                optimizer=setup.optimizer,
                scheduler=setup.scheduler,
                scaler=setup.scaler,
                phase_index=phase_index,
                phase_epoch=phase_epoch,
                gathered=gathered,
            )
            save_checkpoint(out / "last.pt", checkpoint)
            if improved:
                save_checkpoint(out / "best.pt", checkpoint)
            write_metrics(out / "metrics.csv", record.history, record.data.task)
            trackers.epoch(record.history[-1], epoch_index)
        if record.phase_complete:
            return epoch_index + (phase.epochs - phase_epoch - 1)  # the skipped epochs still count
        if stop_after is not None and epoch_index >= stop_after:
            break
    return epoch_index


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


class _Clock:
    """Seconds of training in the whole run, across resumptions."""

    def __init__(self, before: float):
        self.before = before
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started


def _silent(message: str) -> None:
    pass
