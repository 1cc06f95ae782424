"""``fit``: run a strategy's phases over the loop, writing the run folder as it goes.

Where a phase trains only the layers after a frozen, deterministic prefix, the prefix's output
is computed once (:mod:`transferkit.train.cache.phase_cache`) and the rest is trained on it instead of
re-running the frozen network every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from ..adapters.lora import peft_model_of
from ..data.preprocess import Preprocessing, legacy_note
from ..data.sources import open_data
from ..errors import ConfigError, Interrupted
from ..model.factory import code_origin, is_object_spec
from ..model.surgery import find_head
from ..runtime.fastpath import FastPath, choose_fast_path, resolve_device
from ..runtime.kernel_trial import InferenceTrial
from ..serialization import write_json
from .config import TrainConfig
from .folder.out_folder import check_out, claim_out, clear_run, remove_leftovers
from .folder.run_folder import (
    RunRecord,
    check_model_code,
    load_model_state,
    load_run,
)
from .folder.run_log import RunLog
from .folder.run_notes import interrupted_line, log_fast, log_weights, note_old_exports, retire_reports
from .folder.tracking import check_store, start_trackers
from .lr_find import find_lr
from .parallel.distributed import DistContext, init_from_env
from .phases.balance import choose_balance
from .phases.epochs import Clock, run_phase
from .phases.finish import finish_run
from .resume import check_same_data, resumed_config
from .rng import seed_everything
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
    choose_strategy: Callable | None = None,
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
        choose_strategy: what replaces ``strategy="auto"`` once model and data are ready, as
            :func:`transferkit.advice.auto.fit` passes it: it returns the config, the advice, and a state to go on from.

    Examples:
        >>> fit(TrainConfig(model="tf_efficientnet_lite0", weights="lite0", data="builtin:digits",
        ...                 strategy="freeze", epochs=3, image_size=64, out="runs/probe"))["best_val_acc"]
        0.93...
    """
    _check_asked(config, stop_after, choose_strategy, resuming=resume is not None)
    dist_ctx = init_from_env()
    state = None
    if resume is not None:
        state = _resumed_state(resume, dist_ctx, trust_code=trust_code)
        config = resumed_config(state, Path(resume), changes)
    weights_note, task_note = None, None
    if state is None:  # a resumed run has its weights in last.pt, and its task in its config
        config, weights_note = choose_weights(config)
        config, task_note = task_of_data(config)
    out = Path(config.out)
    _check_same_settings(config, stop_after, dist_ctx)
    dist_ctx.main_reads(lambda: check_out(out, resume=state is not None, overwrite=overwrite))
    # DATA and MODEL are opened before the run folder is made: a bad one leaves nothing behind.
    source, model, load_report = _open(config, state, data, module)
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
            choose_strategy=choose_strategy,
        )
    finally:
        if run_log is not None:
            run_log.close()
        if lock is not None:
            lock.release()


def _check_asked(config: TrainConfig | None, stop_after: int | None, choose_strategy, *, resuming: bool) -> None:
    if config is None and not resuming:
        raise ConfigError("fit needs a TrainConfig or a run folder to resume.")
    if stop_after is not None and stop_after < 1:
        raise ConfigError(
            f"stop_after must be at least 1 (epochs of the run to train before stopping), got {stop_after}.",
            argument="stop_after",
        )
    if not resuming and config.strategy == "auto" and choose_strategy is None:  # a resumed run's is chosen
        raise ConfigError(
            "strategy auto is chosen by the advice: train it with transferkit.advice.auto.fit (as the CLI and tk.fit "
            "do), or name a strategy.",
            argument="strategy",
        )


def _resumed_state(resume: str | Path, dist_ctx: DistContext, *, trust_code: bool) -> dict:
    """The run to continue, read where each rank has it (a shared filesystem), else sent by rank 0; its code checked."""
    if dist_ctx.everyone((Path(resume) / "last.pt").is_file()):
        state = load_run(resume)
    else:
        state = dist_ctx.main_reads(lambda: load_run(resume))
    check_model_code(state, resume, trust_code=trust_code, same_code=True)
    return state


def _open(config: TrainConfig, state: dict | None, data: PreparedData | None, module: nn.Module | None):
    """DATA opened (unless ``data`` is given decoded) and checked against a resumed run's; the model built with its
    weights, or the ``module`` given with the strategy's adapters. Returns (source, model, load report)."""
    source = None if data is not None else open_data(config.data, config.label_spec(), config.hf_options())
    if source is not None:
        check_stream(config, source)
    if state is not None:
        check_same_data(state, source if source is not None else data, config.data)
    seed_everything(config.seed)  # random initialisation (scratch, new layers) follows the seed too
    if module is None:
        return source, *build_model(config, len((data or source).class_names), load_weights=state is None)
    if peft_model_of(module) is None:
        attach_adapters(module, config)  # lora and dora add theirs to the module given
    return source, module, None


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
    choose_strategy: Callable | None,
) -> dict:
    if not dist_ctx.is_main:
        log = _silent
    device = resolve_device(config.device, local_rank=dist_ctx.local_rank if dist_ctx.enabled else None)
    out = Path(config.out)

    if state is None:  # the first line says where the weights came from
        log_weights(config, model, load_report, weights_note, log)
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
        config, advice, raced = choose_strategy(config, model, data, write=dist_ctx.is_main, log=log)
        state = raced or state  # a race's winner goes on from its checkpoint, as a resumed run does
        seed_everything(config.seed)  # the probe drew random numbers; the run starts as a chosen one would
    if config.lr == "auto":
        found = find_lr(config, data=data, log=log)
        config = replace(config, lr=found["suggestion"])  # the run records the rate it used
        log(f"lr auto: training at {config.lr:.2e}, the range test's suggestion (lr_find.png)")
        seed_everything(config.seed)
    phases = config.phases()
    model = model.to(device)
    record = RunRecord(config, data, kernels or Kernels(), find_head(model), load_report)
    record.advice = advice
    record.backbone = backbone_facts(config, model)
    record.model_code = (state or {}).get("model_code") or code_origin(config.model)
    choose_balance(record, state, log, distributed=dist_ctx.enabled)
    probe = _measure_kernels(record, model, device, saved=state or {}, log=log, dist_ctx=dist_ctx)
    start_phase, start_epoch = 0, 0
    if state is not None:
        start_phase, start_epoch = _resume(record, model, state, phases, main=dist_ctx.is_main, log=log)
    if dist_ctx.is_main:  # on resuming too: the folder may have moved, epochs or device changed
        write_json(out / "config.json", config.to_dict())

    trackers = start_trackers(config, out, main=dist_ctx.is_main, log=log)
    status = "FAILED"
    try:
        run = partial(
            run_phase, record, model, device=device, dist_ctx=dist_ctx, probe=probe, trackers=trackers, log=log
        )
        stopped = _run_phases(run, record, phases, (start_phase, start_epoch), state=state, stop_after=stop_after)
        # Only when every rank got here: a rank that failed must not leave the others waiting.
        dist_ctx.barrier()
        result = finish_run(record, model, stopped=stopped, main=dist_ctx.is_main, log=log)
        if state is not None and dist_ctx.is_main:
            note_old_exports(out, state.get("best_epoch"), record.best, log)
        trackers.finished(out)
        status = "KILLED" if stopped else "FINISHED"  # stopped: to be resumed, which reopens it
        return result
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C, or SIGINT and SIGTERM as the command line raises them
        status = "KILLED"
        if dist_ctx.is_main:
            log(interrupted_line(config.epochs, out))
        raise
    finally:
        trackers.close(status)


def _run_phases(run, record: RunRecord, phases: list, start: tuple[int, int], *, state, stop_after) -> bool:
    """The phases from ``start`` (phase, epoch within it) through ``run``; whether ``stop_after`` stopped them."""
    start_phase, start_epoch = start
    epoch_index = sum(p.epochs for p in phases[:start_phase]) + start_epoch
    clock = Clock(record.history[-1]["cumulative_seconds"] if record.history else 0.0)
    for phase_index in range(start_phase, len(phases)):
        epoch_index = run(
            phases[phase_index],
            phase_index,
            first_epoch=start_epoch if phase_index == start_phase else 0,
            epoch_index=epoch_index,
            resumed=state if phase_index == start_phase and start_epoch > 0 else None,
            clock=clock,
            stop_after=stop_after,
        )
        if stop_after is not None and epoch_index >= stop_after:
            return True
    return False


def _resume(record: RunRecord, model: nn.Module, state: dict, phases: list, *, main: bool, log) -> tuple[int, int]:
    """A resumed run's weights, history and best epoch back in place; returns the phase and epoch to start at."""
    config, out = record.config, Path(record.config.out)
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
    if main:
        retire_reports(out, log)
    return start_phase, start_epoch


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


def _silent(message: str) -> None:
    pass
