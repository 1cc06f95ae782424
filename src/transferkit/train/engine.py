"""``fit``: run a strategy's phases over the loop, writing the run folder as it goes.

Where a phase trains only the layers after a frozen, deterministic prefix, the prefix's output
is computed once (:mod:`transferkit.train.phase_cache`) and the rest is trained on it instead of
re-running the frozen network every epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from .._text import one_line
from ..data.augment import augmentation, mixer
from ..data.preprocess import BatchPrep
from ..data.sources import open_data
from ..errors import ConfigError, RunError
from ..model.factory import code_origin
from ..model.surgery import find_head
from ..serialization import write_json
from .compiled import compiled_for_training
from .config import IMBALANCED, TrainConfig
from .distributed import DistContext, init_from_env, make_loader
from .fastpath import FastPath, choose_fast_path, resolve_device
from .loop import evaluate, train_one_epoch
from .lr_find import find_lr
from .metrics import classification_metrics, imbalance, monitored
from .optim import create_optimizer, warmup_cosine
from .phase_cache import cache_frozen_prefix
from .rng import seed_everything, set_rng_state
from .run_folder import (
    RunRecord,
    check_model_code,
    check_out,
    check_same_data,
    checkpoint_state,
    claim_out,
    clear_run,
    load_model_state,
    load_run,
    remove_leftovers,
    resumed_config,
    save_checkpoint,
    summary,
    write_metrics,
)
from .setup import Kernels, PreparedData, build_model, prepare_data, preprocessing_for
from .strategies import Phase, apply_phase

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
) -> dict:
    """Train a run, or continue one from ``resume``; returns the summary also written to ``report.json``.

    Args:
        resume: a run folder to continue, where it is now (a copied or moved run continues in place).
        changes: with ``resume``, settings given again; see :func:`~transferkit.train.run_folder.resumed_config`.
        trust_code: with ``resume``, let a run whose MODEL is the user's code import it.
        overwrite: replace the run in ``config.out``, or write into a folder that holds other files.
        stop_after: stop once this many epochs (of the whole run) are done; ``resume`` continues.
        data: DATA already decoded for this config (see :func:`~transferkit.train.setup.prepare_data`).
        kernels: kernels already measured for this model; filled in here where missing, so that
            runs sharing the object measure once.

    Example:
        >>> fit(TrainConfig(model="tf_efficientnet_lite0", weights="lite0", data="builtin:digits",
        ...                 strategy="freeze", epochs=3, image_size=64, out="runs/probe"))["best_val_acc"]
        0.93...
    """
    state = None
    if resume is not None:
        state = load_run(resume)
        check_model_code(state, resume, trust_code=trust_code, same_code=True)
        config = resumed_config(state, Path(resume), changes)
    if config is None:
        raise ConfigError("fit needs a TrainConfig or a run folder to resume.")
    dist_ctx = init_from_env(resolve_device(config.device).type)
    out = Path(config.out)
    if dist_ctx.is_main:
        check_out(out, resume=state is not None, overwrite=overwrite)
    # DATA and MODEL are opened before the run folder is made: a bad one leaves nothing behind.
    source = None if data is not None else open_data(config.data)
    if state is not None:
        check_same_data(state, source, config.data)
    seed_everything(config.seed)  # random initialisation (scratch, new layers) follows the seed too
    num_classes = len((data or source).class_names)
    model, load_report = build_model(config, num_classes, load_weights=state is None)
    lock = claim_out(out) if dist_ctx.is_main else None
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
            stop_after=stop_after,
            log=log,
            data=data,
            kernels=kernels,
        )
    finally:
        if lock is not None:
            lock.release()


def _fit(
    config: TrainConfig,
    state: dict | None,
    dist_ctx: DistContext,
    *,
    source,
    model: nn.Module,
    load_report: dict | None,
    stop_after: int | None,
    log: Callable[[str], None],
    data: PreparedData | None,
    kernels: Kernels | None,
) -> dict:
    if not dist_ctx.is_main:
        log = _silent
    device = resolve_device(config.device, local_rank=dist_ctx.local_rank if dist_ctx.enabled else None)
    phases = config.phases()
    out = Path(config.out)

    if data is None:
        data = prepare_data(config, source=source, model=model, log=log)
    elif data.spec != config.data or data.preprocessing != preprocessing_for(config, model):
        raise ValueError("fit was given data prepared for another DATA or preprocessing than its config's.")
    if config.lr == "auto":
        found = find_lr(config, data=data, log=log)
        config = replace(config, lr=found["suggestion"])  # the run records the rate it used
        phases = config.phases()
        log(f"lr auto: training at {config.lr:.2e}, the range test's suggestion (lr_find.png)")
        seed_everything(config.seed)
    model = model.to(device)
    record = RunRecord(config, data, kernels or Kernels(), find_head(model), load_report)
    record.model_code = (state or {}).get("model_code") or code_origin(config.model)
    _choose_balance(record, state, log, distributed=dist_ctx.enabled)
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
    elif load_report is not None:
        how = ", ".join(f"{n} by {k}" for k, n in load_report["how"].items())
        log(
            f"weights: {config.weights}: {len(load_report['matched'])} tensors loaded, "
            f"{load_report['loaded_fraction']:.1%} of parameters ({how}); head '{record.head}' is new"
        )
        for finding in load_report["verification"]["findings"]:
            log(f"warning: weights: {finding['message']}")
    if dist_ctx.is_main:  # on resuming too: the folder may have moved, epochs or device changed
        write_json(out / "config.json", config.to_dict())

    writer = _tensorboard(out, log) if dist_ctx.is_main else None
    epoch_index = sum(p.epochs for p in phases[:start_phase]) + start_epoch
    clock = _Clock(record.history[-1]["cumulative_seconds"] if record.history else 0.0)
    stopped = False
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
                writer=writer,
                stop_after=stop_after,
                log=log,
            )
            if stop_after is not None and epoch_index >= stop_after:
                stopped = True
                break
    finally:
        if writer is not None:
            writer.close()
    # Only when every rank got here: a rank that failed must not leave the others waiting.
    dist_ctx.barrier()
    if dist_ctx.is_main and record.best is not None:
        from ..inference.calibration import calibrate_run

        # Training's validation of best.pt gave its logits; a resumed run whose best epoch came
        # before the resume computes them again from the run folder. The run just imported
        # MODEL's code itself: trusting it again here adds nothing.
        validation = None
        if record.best_outputs is not None:
            validation = (*record.best_outputs, record.best["epoch"], f"validation ({record.data.splits})")
        record.calibration = calibrate_run(out, device=config.device, trust_code=True, validation=validation, log=log)
        _save_adapter(out, config, log)
    result = summary(record, model, stopped=stopped, write=dist_ctx.is_main)
    if dist_ctx.is_main:
        from ..inference.model_card import write_model_card

        write_model_card(out)
    return result


def _save_adapter(out: Path, config: TrainConfig, log) -> None:
    """A lora or dora run's best adapters and head in peft's own format, for peft users without transferkit."""
    from .strategies import ADAPTER_STRATEGIES

    if config.strategy not in ADAPTER_STRATEGIES:
        return
    from ..adapters import ADAPTER_FOLDER, save_adapter
    from ..inference.runs import load_trained

    trained = load_trained(out, device="cpu", trust_code=True)
    base = {
        "model": config.model,
        "weights": config.weights,
        "image_size": config.image_size,
        "in_chans": config.in_chans,
        "num_classes": len(trained.class_names),
        "class_names": trained.class_names,
    }
    folder = save_adapter(trained.model, out / ADAPTER_FOLDER, base=base)
    log(f"adapter: {folder} (peft's format: adapter_config.json, adapter_model.safetensors; base.json names the base)")


def _choose_balance(record: RunRecord, state: dict | None, log, *, distributed: bool = False) -> None:
    """Decide ``auto`` balance and monitor from the training set's class counts (a resumed run keeps its own).

    On imbalanced data auto samples each class equally often: on digits with half the classes
    cut to 10%, test balanced accuracy was 89% with the sampler, 80% with the weighted loss and
    50% with neither (mean of 3 seeds, BENCHMARKS.md). torchrun shards by DistributedSampler,
    so there auto weights the loss instead.
    """
    config = record.config
    if state is not None and "balance" in state:
        record.balance, record.monitor = state["balance"], state["monitor"]
        return
    ratio = imbalance(list(record.data.class_counts["train"].values()))
    imbalanced = ratio > IMBALANCED
    mixing = config.mixup > 0 or config.cutmix > 0
    # torchrun shards with its own sampler; mixed targets exclude the weighted loss.
    chosen = ("sampler" if not distributed else "none" if mixing else "weighted") if imbalanced else "none"
    record.balance = config.balance if config.balance != "auto" else chosen
    record.monitor = config.monitor if config.monitor != "auto" else ("balanced_acc" if imbalanced else "acc")
    if config.balance == "auto" or config.monitor == "auto":
        log(
            f"classes {'imbalanced' if imbalanced else 'balanced'} (largest over smallest {ratio:.1f}): "
            f"balance {record.balance}, best checkpoint by {record.monitor}"
        )


def _class_weights(record: RunRecord, device: torch.device) -> torch.Tensor | None:
    """Cross-entropy weights N / (K * n_c), as scikit-learn's 'balanced', when balance is weighted."""
    if record.balance != "weighted":
        return None
    counts = torch.tensor(list(record.data.class_counts["train"].values()), dtype=torch.float32)
    weights = counts.sum() / (len(counts) * counts.clamp(min=1))
    return weights.to(device)


def _sample_weights(record: RunRecord, dist_ctx: DistContext) -> torch.Tensor | None:
    """Per-image sampling weights 1 / n_c, when balance is sampler: each class drawn equally often."""
    if record.balance != "sampler":
        return None
    if dist_ctx.enabled:
        raise ConfigError("balance sampler does not combine with torchrun; use balance weighted.", argument="balance")
    labels = record.data.train.decoded.labels
    counts = torch.bincount(labels, minlength=len(record.data.class_names)).clamp(min=1)
    return (1.0 / counts.double())[labels]


def _measure_kernels(
    record: RunRecord, model: nn.Module, device: torch.device, *, saved: dict, log, dist_ctx: DistContext
):
    """Fill in the inference kernels now; return the probe that measures training kernels when first needed.

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
    elif kernels.inference is None:
        # Batches larger than the data would never run: they are not measured.
        largest = max(len(data.train), len(data.val))
        kernels.inference = dist_ctx.from_main(
            probe(train=False, batch_size=min(config.batch_size, 16), max_batch_size=min(256, largest))
        )
        _log_fast(log, "inference (frozen layers, evaluation)", kernels.inference)
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
    writer,
    stop_after: int | None,
    log,
) -> int:
    """Train one phase from ``first_epoch``; returns the run's epoch count after it."""
    config, data, kernels = record.config, record.data, record.kernels
    apply_phase(
        model,
        phase,
        head=record.head,
        freeze_patterns=config.freeze,
        unfreeze_last=config.unfreeze_last,
        train_bn=config.train_bn,
        bitfit_norms=config.bitfit_norms,
    )
    augment = _augment_for(config, phase)
    phase_started = time.perf_counter()
    data.train.transform = augmentation(
        augment, data.preprocessing.input_size[1], channels=data.preprocessing.input_size[0]
    )
    mix = mixer(
        mixup=config.mixup,
        cutmix=config.cutmix,
        label_smoothing=config.label_smoothing,
        num_classes=len(data.class_names),
    )
    # MixUp and CutMix mix images: the frozen layers' output of unmixed ones cannot stand in.
    cacheable = config.cache and (augment == "none" or config.cache_views > 0) and mix is None
    cached = None
    if cacheable:
        cached = cache_frozen_prefix(
            model, config, data, kernels.inference, device, head=record.head, augment=augment, log=log
        )
    if cached is not None:
        # What trains is the tail after the cached prefix, in the prefix's memory format.
        path = FastPath(kernels.inference.channels_last, config.pinned_precision or "fp32", "tail after the cache")
        train_views, val_set, prep = cached.train_views, cached.val, cached.prep
        skipping = cached.skipping
        val_path, val_prep = path, prep
    else:
        if kernels.training is None:  # measured when the whole network first trains
            kernels.training = dist_ctx.from_main(probe(train=True))
            _log_fast(log, "training", kernels.training)
        path = kernels.training
        prep = BatchPrep(data.preprocessing, device, path.channels_last)
        train_views, val_set, skipping = [data.train], data.val, nullcontext
        # Validation runs as eval and predict will: the inference kernels, so that eval of best.pt
        # reproduces its validation exactly (one process; under torchrun the training memory format stays).
        val_path = (
            kernels.inference
            if not dist_ctx.enabled
            else FastPath(path.channels_last, kernels.inference.precision, "inference precision")
        )
        val_prep = BatchPrep(data.preprocessing, device, val_path.channels_last)
    per_rank = len(train_views[0]) // dist_ctx.world_size
    drop_last = per_rank > config.batch_size
    steps = (per_rank // config.batch_size if drop_last else math.ceil(per_rank / config.batch_size)) or 1
    train_net = model if cached is None else cached.net
    if cached is None and not dist_ctx.enabled:  # the whole network's step; under torchrun, DDP's own
        images = steps * config.batch_size * (phase.epochs - first_epoch)
        input_size = data.preprocessing.input_size
        train_net, _ = compiled_for_training(
            model,
            path,
            input_size,
            device=device,
            batch_size=config.batch_size,
            images=images,
            mode=config.compile,
            reprobe=config.reprobe,
            log=log,
        )
    model.to(memory_format=torch.channels_last if path.channels_last else torch.contiguous_format)
    mixing = f" with MixUp {config.mixup:g} / CutMix {config.cutmix:g}" if mix is not None else ""
    log(f"phase {phase.name}: {_trainable_text(model)}, augmentation {augment}{mixing}")
    if dist_ctx.enabled:
        train_net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = create_optimizer(
        model,
        config.optimizer,
        lr=phase.lr,
        weight_decay=config.weight_decay,
        head_lr=config.head_lr,
        layer_decay=phase.layer_decay,
    )
    scheduler = warmup_cosine(optimizer, steps * phase.epochs, config.warmup_fraction)
    # fp16 gradients underflow without loss scaling, on any device.
    scaler = torch.amp.GradScaler(device.type) if path.precision == "fp16" else None
    if resumed is not None:
        try:
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            if scaler is not None and resumed.get("scaler"):
                scaler.load_state_dict(resumed["scaler"])
            set_rng_state(resumed["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise RunError(
                f"Cannot resume '{config.out}': its optimizer, scheduler or random state is damaged "
                f"({type(e).__name__}: {one_line(e, 200)}). Use a complete copy of the run."
            ) from None
    # Cached activations feed only the tail: large batches; images: the measured inference batch.
    val_batch = 256 if cached is not None else kernels.inference.inference_batch_size
    val_loader = make_loader(val_set, batch_size=val_batch, shuffle=False, seed=0, dist_ctx=dist_ctx, drop_last=False)
    out = Path(config.out)
    class_weights, sample_weights = _class_weights(record, device), _sample_weights(record, dist_ctx)

    for phase_epoch in range(first_epoch, phase.epochs):
        epoch_started = time.perf_counter()
        seed = config.seed * 1000 + epoch_index
        seed_everything(seed)
        train_loader = make_loader(
            train_views[epoch_index % len(train_views)],
            batch_size=config.batch_size,
            shuffle=True,
            seed=seed,
            dist_ctx=dist_ctx,
            drop_last=drop_last,
            sample_weights=sample_weights,
        )
        lr_now = optimizer.param_groups[-1]["lr"]
        with skipping():
            train_loss = train_one_epoch(
                train_net,
                train_loader,
                optimizer,
                scheduler,
                prep=prep,
                device=device,
                label_smoothing=config.label_smoothing,
                class_weights=class_weights,
                mix=mix,
                precision=path.precision,
                scaler=scaler,
                dist_ctx=dist_ctx,
                progress=f"epoch {epoch_index + 1}/{config.epochs}",
            )
            if not math.isfinite(train_loss):
                _diverged(record, epoch_index + 1, phase, "training")
            if val_path.channels_last != path.channels_last:
                model.to(memory_format=torch.channels_last if val_path.channels_last else torch.contiguous_format)
            metrics = evaluate(
                model if cached is None else cached.net,
                val_loader,
                num_classes=len(data.class_names),
                prep=val_prep,
                device=device,
                precision=val_path.precision,
                dist_ctx=dist_ctx,
                outputs=not dist_ctx.enabled,  # this process's logits: all of them without torchrun
            )
            if val_path.channels_last != path.channels_last:
                model.to(memory_format=torch.channels_last if path.channels_last else torch.contiguous_format)
        if not math.isfinite(metrics["loss"]):
            _diverged(record, epoch_index + 1, phase, "validation")
        # The first epoch of a phase carries the cost of computing the cache.
        seconds = time.perf_counter() - (phase_started if phase_epoch == 0 else epoch_started)
        epoch_index += 1
        scores = classification_metrics(metrics["confusion"].tolist(), data.class_names)
        row = {
            "epoch": epoch_index,
            "phase": phase.name,
            "train_loss": train_loss,
            "val_loss": metrics["loss"],
            "val_acc": metrics["accuracy"],
            "val_balanced_acc": scores["balanced_accuracy"],
            "val_macro_f1": scores["macro_f1"],
            "lr": lr_now,
            "seconds": seconds,
            "cached": cached is not None,
            "cumulative_seconds": clock.elapsed(),
        }
        record.history.append(row)
        improved = record.best is None or monitored(row, record.monitor) > monitored(record.best, record.monitor)
        if improved:
            record.best = row
            record.best_metrics = {k: scores[k] for k in ("per_class", "most_confused")}
            record.best_outputs = (metrics["logits"], metrics["targets"]) if "logits" in metrics else None
        log(
            f"epoch {epoch_index}/{config.epochs} [{phase.name}] train_loss {train_loss:.4f} "
            f"val_loss {metrics['loss']:.4f} val_acc {metrics['accuracy']:.4f} "
            f"balanced {scores['balanced_accuracy']:.4f} macro_f1 {scores['macro_f1']:.4f} ({seconds:.1f} s)"
            + (" *" if improved else "")
        )
        stale = _epochs_without_progress(record, phase)
        record.phase_complete = config.patience is not None and stale >= config.patience
        if record.phase_complete and phase_epoch + 1 < phase.epochs:
            log(f"phase {phase.name} ends early: no better {record.monitor} in {stale} epochs (patience)")
        if dist_ctx.is_main:
            checkpoint = checkpoint_state(
                record,
                model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                phase_index=phase_index,
                phase_epoch=phase_epoch,
            )
            save_checkpoint(out / "last.pt", checkpoint)
            if improved:
                save_checkpoint(out / "best.pt", checkpoint)
            write_metrics(out / "metrics.csv", record.history)
            if writer is not None:
                for key in ("train_loss", "val_loss", "val_acc", "val_balanced_acc", "val_macro_f1", "lr"):
                    writer.add_scalar(key, record.history[-1][key], epoch_index)
                writer.flush()
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


def _augment_for(config: TrainConfig, phase: Phase) -> str:
    if config.augment != "auto":
        return config.augment
    # Where a frozen prefix exists its output can be cached, which augmentation would prevent;
    # adapters and biases train throughout the network, which has none.
    return "light" if phase.trains in ("all", "adapters", "bitfit") else "none"


def _log_fast(log, use: str, chosen: FastPath) -> None:
    fmt = "channels-last" if chosen.channels_last else "NCHW"
    log(f"fast path for {use}: {fmt} {chosen.precision}, {chosen.reason}")


def _silent(message: str) -> None:
    pass


def _trainable_text(model: nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} of {total:,} parameters train"


def _tensorboard(out: Path, log):
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:
        log("TensorBoard logs off: the run folder's name is not valid UTF-8, which TensorBoard cannot write")
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; a broken install should not stop training
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))
