"""What one phase trains with, built once before its epochs: trainable parameters, cache, kernels, optimizer.

:func:`prepare_phase` gathers it into a :class:`PhaseSetup`; the epochs then run over it plainly
(:func:`transferkit.train.engine.fit`), as torchvision's reference script keeps its set-up apart
from ``train_one_epoch``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..._text import one_line
from ...data.augment import augmentation, mixer
from ...data.preprocess import BatchPrep
from ...errors import RunError
from ...runtime.compiled import compiled_for_training
from ...runtime.fastpath import FastPath, kernel_label
from ...runtime.kernel_trial import InferenceTrial, KernelTrial
from ...tasks.objective import loss_function
from ..cache.phase_cache import CachedPhase, cache_frozen_prefix
from ..config import TrainConfig
from ..folder.run_folder import RunRecord
from ..folder.run_notes import log_fast
from ..optim import build_optimizer, warmup_cosine
from ..parallel.distributed import DistContext, epoch_steps, make_loader
from ..parallel.sharding import is_sharded, load_optimizer_state, shard_model, shardable_kernels
from ..rng import set_rng_state
from ..strategies import Phase, apply_phase
from .balance import class_weights, sample_weights
from .norm_adapt import ADAPT_IMAGES, adapt_norm_statistics, adapts_norms_first

__all__ = [
    "PhaseSetup",
    "apply_configured_phase",
    "augment_for",
    "phase_optimizer",
    "prepare_phase",
    "settle_trial",
    "settle_validation_trial",
    "trainable_text",
]


@dataclass
class PhaseInputs:
    """What the phase's epochs read, and how."""

    augment: str
    mix: Callable | None  # MixUp / CutMix, or None
    cached: CachedPhase | None  # the frozen prefix computed once, or None
    train_views: list  # datasets the epochs cycle through
    skipping: Callable  # the block within which the network skips the cached prefix
    val_loader: object
    steps_per_epoch: int
    drop_last: bool
    started: float  # when the phase's set-up began: its first epoch carries the cache's cost


@dataclass
class PhaseKernels:
    """The kernels the phase runs with, the batch preparation that goes with them, and the trials still deciding."""

    path: FastPath  # training kernels
    val_path: FastPath  # validation kernels: the inference ones, so that eval reproduces validation
    prep: Callable[[torch.Tensor], torch.Tensor]
    val_prep: Callable[[torch.Tensor], torch.Tensor]
    trial: KernelTrial | None = None  # training kernels still being chosen on the first steps
    val_trial: InferenceTrial | None = None  # inference kernels still being chosen on the first validation


@dataclass
class PhaseStep:
    """What a training step updates and with what: the networks, the optimizer, its schedule, the loss."""

    train_net: nn.Module  # what trains: the model, compiled or wrapped in DDP, or the tail after the cache
    eval_net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    class_weights: torch.Tensor | None
    sample_weights: torch.Tensor | None
    loss_fn: Callable | None = None  # several labels or numbers: the task's loss (classes: cross-entropy)


@dataclass
class PhaseSetup:
    """Everything one phase trains with, in three parts."""

    inputs: PhaseInputs
    kernels: PhaseKernels
    step: PhaseStep


def prepare_phase(
    record: RunRecord,
    model: nn.Module,
    phase: Phase,
    *,
    first_epoch: int,
    resumed: dict | None,
    device: torch.device,
    dist_ctx: DistContext,
    probe,
    log,
) -> PhaseSetup:
    """Set which parameters train for ``phase`` and build what its epochs need; ``resumed`` restores the optimizer."""
    config, data = record.config, record.data
    if first_epoch == 0 and resumed is None and not config.stream and adapts_norms_first(config, phase, model):
        seconds = adapt_norm_statistics(model, data.train, BatchPrep(data.preprocessing, device, False))
        log(
            f"BatchNorm statistics re-estimated on {min(len(data.train), ADAPT_IMAGES)} training images in "
            f"{seconds:.1f} s: the head learns on the features that the phase training every layer starts from"
        )
    apply_configured_phase(model, config, phase, record.head)
    started = time.perf_counter()
    augment, mix = _augmentation(record, phase)
    cached = _cache(record, model, phase, augment, mix, device=device, dist_ctx=dist_ctx, log=log)
    if cached is not None:
        kernels, train_views, val_set = _cached_kernels(record, cached, log), cached.train_views, cached.val
    else:
        kernels = _network_kernels(record, device=device, dist_ctx=dist_ctx, probe=probe, log=log)
        train_views, val_set = [data.train], data.val
    steps, drop_last = epoch_steps(len(train_views[0]), config.batch_size, dist_ctx.world_size)
    mixing = f" with MixUp {config.mixup:g} / CutMix {config.cutmix:g}" if mix is not None else ""
    images = steps * config.batch_size * (phase.epochs - first_epoch)
    said = f"phase {phase.name}: {trainable_text(model)}, augmentation {augment}{mixing}"
    train_net = _train_net(
        record, model, cached, kernels, said, images=images, device=device, dist_ctx=dist_ctx, log=log
    )
    optimizer, scheduler, scaler = _optimization(
        record, model, phase, kernels, steps=steps, resumed=resumed, device=device
    )
    step = PhaseStep(
        train_net,
        model if cached is None else cached.net,
        optimizer,
        scheduler,
        scaler,
        class_weights(record, device) if data.task == "classification" else None,
        sample_weights(record, dist_ctx),
        task_loss(record, device),
    )
    # Cached activations feed only the tail: large batches; images: the measured inference batch.
    if cached is not None:
        val_batch = 256
    elif kernels.val_trial is not None:
        val_batch = kernels.val_trial.max_batch_size
    else:
        val_batch = record.kernels.inference.inference_batch_size
    val_loader = make_loader(val_set, batch_size=val_batch, shuffle=False, seed=0, dist_ctx=dist_ctx, drop_last=False)
    skipping = cached.skipping if cached is not None else nullcontext
    inputs = PhaseInputs(augment, mix, cached, train_views, skipping, val_loader, steps, drop_last, started)
    return PhaseSetup(inputs, kernels, step)


def _augmentation(record: RunRecord, phase: Phase) -> tuple[str, Callable | None]:
    """The phase's augmentation, set on the training images, and its MixUp / CutMix (or None)."""
    config, pre = record.config, record.data.preprocessing
    augment = augment_for(config, phase)
    record.data.train.transform = augmentation(augment, tuple(pre.input_size[1:]), channels=pre.input_size[0])
    mix = mixer(
        mixup=config.mixup,
        cutmix=config.cutmix,
        label_smoothing=config.label_smoothing,
        num_classes=len(record.data.class_names),
    )
    return augment, mix


def _cache(record: RunRecord, model: nn.Module, phase: Phase, augment: str, mix, *, device, dist_ctx, log):
    """The frozen prefix of ``phase`` computed once (:func:`cache_frozen_prefix`), where nothing prevents it."""
    config, kernels = record.config, record.kernels
    # MixUp and CutMix mix images: the frozen layers' output of unmixed ones cannot stand in.
    cacheable = config.cache and (augment == "none" or config.cache_views > 0) and mix is None
    if cacheable and config.stream and phase.trains in ("head", "custom"):
        log(f"phase {phase.name}: no cache of the frozen layers: the training shards are streamed each epoch")
    if not cacheable or config.stream:
        return None
    infer = kernels.inference or kernels.inference_trial
    return cache_frozen_prefix(
        model, config, record.data, infer, device, head=record.head, augment=augment, log=log, dist_ctx=dist_ctx
    )


def _cached_kernels(record: RunRecord, cached: CachedPhase, log) -> PhaseKernels:
    """A cached phase trains the tail after the prefix, in the prefix's memory format, and validates with it."""
    kernels = record.kernels
    if kernels.inference is None:  # chosen on the pass that computed the cache
        kernels.inference, kernels.inference_trial = kernels.inference_trial.result(), None
        log_fast(log, "inference (frozen layers, evaluation)", kernels.inference)
    path = FastPath(kernels.inference.channels_last, record.config.pinned_precision or "fp32", "tail after the cache")
    return PhaseKernels(path, path, cached.prep, cached.prep)


def _network_kernels(record: RunRecord, *, device, dist_ctx: DistContext, probe, log) -> PhaseKernels:
    """The whole network's kernels: training ones measured (or timed on the first steps), and validation run as eval
    and predict will, with the inference ones, so that eval of best.pt reproduces its validation exactly."""
    config, kernels, pre = record.config, record.kernels, record.data.preprocessing
    trial = None
    if kernels.training is None:  # measured when the whole network first trains
        # One process measures on its first real steps; ranks of torchrun must agree before DDP
        # fixes the memory format, and a compile asked for needs the kernels first.
        chosen = probe(train=True, trial=KernelTrial if not dist_ctx.enabled and config.compile != "on" else None)
        if isinstance(chosen, KernelTrial):
            trial = chosen
            labels = ", ".join(kernel_label(*option) for option in trial.options)
            log(f"kernels for training: {labels} are timed on the first steps, which train as usual")
        else:
            kernels.training = dist_ctx.from_main(chosen)
            log_fast(log, "training", kernels.training)
    path = kernels.training or FastPath(False, "fp32", "until the first steps decide")
    # One process: where no frozen pass chose the inference kernels, the first validation does. Under torchrun
    # they are measured, and the training memory format stays.
    val_trial = kernels.inference_trial.timing("validation") if kernels.inference is None else None
    if val_trial is not None:
        labels = ", ".join(kernel_label(*option) for option in val_trial.options)
        log(f"kernels for inference: {labels} are timed on the first validation batches")
    if dist_ctx.enabled:
        val_path = FastPath(path.channels_last, kernels.inference.precision, "inference precision")
    else:
        val_path = kernels.inference or FastPath(False, "fp32", "until the first validation decides")
    prep, val_prep = BatchPrep(pre, device, path.channels_last), BatchPrep(pre, device, val_path.channels_last)
    return PhaseKernels(path, val_path, prep, val_prep, trial, val_trial)


def _train_net(
    record: RunRecord, model: nn.Module, cached, kernels: PhaseKernels, said: str, *, images: int, device, dist_ctx, log
) -> nn.Module:
    """What trains: the tail after the cache, or the whole network (compiled where that repays over ``images``,
    sharded or wrapped in DDP under torchrun), in the training kernels' memory format. ``said`` is the phase's
    line, logged once the network to train is known and before it is sharded."""
    config, path = record.config, kernels.path
    train_net = model if cached is None else cached.net
    if cached is None and not dist_ctx.enabled and kernels.trial is None:  # whole network's step; torchrun: DDP's
        train_net = _compiled(model, path, record, device, images=images, log=log)
    if not is_sharded(model):  # sharded in an earlier phase: it keeps its memory format
        model.to(memory_format=torch.channels_last if path.channels_last else torch.contiguous_format)
    log(said)
    if config.shard_params and not dist_ctx.enabled and cached is None:
        log("shard_params: one process, nothing to shard with: the parameters stay whole (start with torchrun)")
    if dist_ctx.enabled and cached is None and config.shard_params:
        # Sharded in the first phase without a cache; later phases train all layers, never on a cache.
        if path.precision == "fp16":
            kernels.path = record.kernels.training = shardable_kernels(path, device)
            log_fast(log, "training", kernels.path)
        if not is_sharded(model):
            precision, world = kernels.path.precision, dist_ctx.world_size
            units = shard_model(model, precision=precision, device=device, world_size=world)
            log(
                f"parameters sharded across {world} processes (FSDP) in {len(units)} units ({_units_text(units)}) "
                f"and the root, {precision}"
            )
        return model
    if dist_ctx.enabled:
        # With a cache, what trains is the tail (``cached.net``), run within ``skipping``, where the frozen
        # prefix's modules are stubbed out. DDP decides from the buffers it found at construction that
        # it will broadcast some, then lists them again in each forward, inside that block: the
        # prefix's BatchNorm statistics are gone and the broadcast of nothing fails (c10d's
        # "!tensors.empty()"). They are frozen, and rank 0's statistics are shared before each
        # validation (``share_buffers``), so the cached tail syncs none in its forward.
        return nn.parallel.DistributedDataParallel(
            model if cached is None else cached.net,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=cached is None,
        )
    return train_net


def _optimization(
    record: RunRecord, model: nn.Module, phase: Phase, kernels: PhaseKernels, *, steps: int, resumed, device
):
    """The phase's optimizer, its warm-up and cosine schedule, and loss scaling for fp16; a resumed run's restored."""
    config = record.config
    optimizer = phase_optimizer(model, config, phase)
    scheduler = warmup_cosine(optimizer, steps * phase.epochs, config.warmup_fraction)
    # fp16 gradients underflow without loss scaling, on any device.
    trial = kernels.trial
    fp16 = kernels.path.precision == "fp16" or (trial is not None and any(p == "fp16" for _, p in trial.options))
    scaler = torch.amp.GradScaler(device.type) if fp16 else None
    if resumed is not None:
        _restore(config, model, optimizer, scheduler, scaler, resumed)
    return optimizer, scheduler, scaler


def _restore(config: TrainConfig, model: nn.Module, optimizer, scheduler, scaler, resumed: dict) -> None:
    """A resumed run's optimizer, schedule, loss scale and random state, where it stopped."""
    try:
        if is_sharded(model):
            load_optimizer_state(model, optimizer, resumed["optimizer"])
        else:
            optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        # the step goes on with this run's schedule: a run extended on resuming has a longer one than the
        # learning rate its optimizer saved (the last of the shorter schedule, 0 at its end)
        for group, base, rule in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * rule(scheduler.last_epoch)
        if scaler is not None and resumed.get("scaler"):
            scaler.load_state_dict(resumed["scaler"])
        set_rng_state(resumed["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise RunError(
            f"Cannot resume '{config.out}': its optimizer, scheduler or random state is damaged "
            f"({type(e).__name__}: {one_line(e, 200)}). Use a complete copy of the run."
        ) from None


def apply_configured_phase(model: nn.Module, config: TrainConfig, phase: Phase, head: str) -> None:
    """Set which parameters train for ``phase`` as ``config`` asks (freeze patterns, stages, BatchNorm, bitfit)."""
    apply_phase(
        model,
        phase,
        head=head,
        freeze_patterns=config.freeze,
        unfreeze_last=config.unfreeze_last,
        train_bn=config.train_bn,
        bitfit_norms=config.bitfit_norms,
    )


def phase_optimizer(model: nn.Module, config: TrainConfig, phase: Phase) -> torch.optim.Optimizer:
    """The optimizer of ``phase`` over the parameters that train: its rate, ``config``'s head rate and decay."""
    return build_optimizer(
        model,
        config.optimizer,
        lr=phase.lr,
        weight_decay=config.weight_decay,
        head_lr=config.head_lr,
        layer_decay=phase.layer_decay,
    )


def _units_text(units: list[str]) -> str:
    return ", ".join(units) if len(units) <= 4 else f"{', '.join(units[:3])}, ... {units[-1]}"


def task_loss(record: RunRecord, device: torch.device) -> Callable | None:
    """The loss of several labels per image or of numbers (None: classes train on cross-entropy)."""
    data, config = record.data, record.config
    if data.task == "classification":
        return None
    return loss_function(
        data.task,
        pos_weight=class_weights(record, device),
        scale=data.target_scale,
        regression_loss="mse" if config.loss == "auto" else config.loss,
    )


def settle_trial(
    setup: PhaseSetup,
    record: RunRecord,
    model: nn.Module,
    *,
    epochs_left: int,
    device: torch.device,
    log,
) -> None:
    """After an epoch that ran a kernel trial: its decision (on the steps timed, if the rule has not decided) becomes
    the phase's kernels, and the compile decision that needed them is taken for the epochs left."""
    path = setup.kernels.trial.settle()
    setup.kernels.trial = None
    record.kernels.training = setup.kernels.path = path
    setup.kernels.prep = BatchPrep(record.data.preprocessing, device, path.channels_last)
    model.to(memory_format=KernelTrial.memory_format((path.channels_last, path.precision)))
    log_fast(log, "training", path)
    if epochs_left > 0:
        images = setup.inputs.steps_per_epoch * record.config.batch_size * epochs_left
        setup.step.train_net = _compiled(model, path, record, device, images=images, log=log)


def settle_validation_trial(
    setup: PhaseSetup, record: RunRecord, *, device: torch.device, dist_ctx: DistContext, log
) -> FastPath:
    """After the validation that ran an inference trial: its decision becomes the run's inference kernels, and
    the next validations run with them, in the chosen batch size."""
    kernels = record.kernels
    kernels.inference, kernels.inference_trial = setup.kernels.val_trial.result(), None
    setup.kernels.val_trial = None
    log_fast(log, "inference (frozen layers, evaluation)", kernels.inference)
    setup.kernels.val_path = kernels.inference
    setup.kernels.val_prep = BatchPrep(record.data.preprocessing, device, kernels.inference.channels_last)
    setup.inputs.val_loader = make_loader(
        setup.inputs.val_loader.dataset,
        batch_size=kernels.inference.inference_batch_size,
        shuffle=False,
        seed=0,
        dist_ctx=dist_ctx,
        drop_last=False,
    )
    return kernels.inference


def _compiled(model: nn.Module, path: FastPath, record: RunRecord, device: torch.device, *, images: int, log):
    """The step to train the whole network with: compiled when that repays over ``images`` (or asked)."""
    config = record.config
    train_net, _ = compiled_for_training(
        model,
        path,
        record.data.preprocessing.input_size,
        device=device,
        batch_size=config.batch_size,
        images=images,
        mode=config.compile,
        reprobe=config.reprobe,
        log=log,
    )
    return train_net


def augment_for(config: TrainConfig, phase: Phase) -> str:
    if config.augment != "auto":
        return config.augment
    # Where a frozen prefix exists its output can be cached, which augmentation would prevent;
    # adapters and biases train throughout the network, which has none.
    return "light" if phase.trains in ("all", "adapters", "bitfit") else "none"


def trainable_text(model: nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} of {total:,} parameters train"
