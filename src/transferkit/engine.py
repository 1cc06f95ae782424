"""The training loop as flat functions: ``train_one_epoch``, ``evaluate``, ``fit``.

``fit`` runs a strategy's phases. Where a phase trains only the head, the model is frozen up
to the head and the input pipeline is deterministic, the head's inputs are computed once and
the head is trained on them instead of re-running the frozen network every epoch.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset
from tqdm import tqdm

from ._storage import memory_budget
from .data import AUGMENTATIONS, DataError, ImageDataset, augmentation, decode, open_data, split_items
from .distributed import DistContext, init_from_env
from .errors import TransferkitError
from .fastpath import FastPath, autocast, choose_fast_path
from .feature_cache import (
    cache_key,
    check_boundary,
    find_boundary,
    fold_batchnorm,
    iter_boundary_outputs,
    load_or_compute,
    truncated,
)
from .loading import load_pretrained
from .models import create_model
from .optim import create_optimizer
from .preprocess import BatchPrep, Preprocessing
from .serialization import atomic_path, write_json
from .strategies import Phase, apply_phase, plan_phases
from .surgery import find_head
from .weights import get_weights

__all__ = ["RUN_FORMAT", "EpochResult", "TrainConfig", "evaluate", "fit", "load_run", "train_one_epoch"]

RUN_FORMAT = "transferkit-run/1"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint. Unknown keys are rejected."""

    model: str
    data: str
    out: str
    weights: str | None = None
    strategy: str = "full"
    epochs: int = 5
    batch_size: int = 64
    lr: float | None = None  # None: the strategy's default for each phase
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.1  # of each phase's steps, linear from 0, then cosine to 0
    seed: int = 0
    device: str = "cpu"
    image_size: int | None = None  # None: the weights' own size
    augment: str = "auto"  # auto: none while a frozen prefix exists (so its output can be cached), else light
    val_fraction: float = 0.2
    freeze: list[str] = field(default_factory=list)
    unfreeze_last: int | None = None
    train_bn: bool = False
    strict_data: bool = False
    cache: bool = True
    cache_views: int = 0  # with random augmentation: cache this many augmented copies (0: no cache)
    channels_last: bool | None = None  # None: measured per model (see fastpath.py)
    precision: str = "auto"  # auto (measured), fp32, bf16 or fp16
    in_chans: int | None = None
    min_loaded: float = 0.5

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TransferkitError(f"Unknown training settings: {', '.join(unknown)}.")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochResult:
    epoch: int
    phase: str
    train_loss: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    cached: bool

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- batches


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    prep: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    label_smoothing: float = 0.0,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    dist_ctx: DistContext | None = None,
    progress: str | None = None,
) -> float:
    """One pass over ``loader``; returns the mean training loss (over all ranks)."""
    model.train()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, count)
    bar = tqdm(loader, desc=progress, leave=False, disable=progress is None or not sys.stderr.isatty())
    for inputs, targets in bar:
        x, y = prep(inputs), targets.to(device, non_blocking=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        total += torch.tensor([loss.item() * len(y), len(y)], dtype=torch.float64, device=device)
    if dist_ctx is not None:
        dist_ctx.all_reduce_sum(total)
    return (total[0] / total[1].clamp(min=1)).item()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    num_classes: int,
    prep: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    precision: str = "fp32",
    dist_ctx: DistContext | None = None,
) -> dict:
    """Loss, accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for inputs, targets in loader:
        x, y = prep(inputs), targets.to(device)
        with autocast(device, precision):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + logits.argmax(-1), minlength=num_classes**2).view(
            num_classes, num_classes
        )
    if dist_ctx is not None:
        dist_ctx.all_reduce_sum(loss_sum)
        dist_ctx.all_reduce_sum(confusion)
    count = confusion.sum().item()
    return {
        "loss": loss_sum.item() / max(count, 1),
        "accuracy": confusion.diag().sum().item() / max(count, 1),
        "count": count,
        "confusion": confusion.cpu(),
    }


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    """Linear warmup from 0 over ``warmup_fraction`` of the steps, then cosine decay to 0."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------- runs


@dataclass
class Prepared:
    config: TrainConfig
    model: nn.Module
    head: str
    class_names: list[str]
    preprocessing: Preprocessing
    train: ImageDataset
    val: ImageDataset
    skipped: list[tuple[str, str]]
    load_report: dict | None
    data_fingerprint: str
    fast: FastPath | None = None  # chosen in fit, once the model is on its device
    fast_inference: FastPath | None = None  # for the frozen prefix's activations, eval and predict


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TransferkitError(f"Output '{out}' is a file; give a folder for --out.")
    if not resume and (out / "last.pt").exists():
        raise TransferkitError(f"'{out}' already holds a run; continue it with --resume {out} or choose another --out.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise TransferkitError(
            f"Cannot write to output folder '{out}': {e.strerror}. Choose a writable --out."
        ) from None


def _preprocessing(config: TrainConfig, model: nn.Module) -> Preprocessing:
    base = Preprocessing.from_model(model)
    if config.weights:
        try:
            base = get_weights(config.weights).preprocessing
        except TransferkitError:
            pass  # a file: the model's own preprocessing
    channels = model_channels(model)
    size = config.image_size or base.input_size[1]
    return Preprocessing((channels, size, size), base.mean, base.std, base.interpolation, base.crop_pct, base.crop_mode)


def model_channels(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def _validate_config(config: TrainConfig) -> list[Phase]:
    phases = plan_phases(config.strategy, config.epochs, lr=config.lr)
    if config.augment not in (*AUGMENTATIONS, "auto"):
        raise TransferkitError(f"Unknown augmentation '{config.augment}'; choose auto, {', '.join(AUGMENTATIONS)}.")
    if config.precision not in PRECISIONS:
        raise TransferkitError(f"Unknown precision '{config.precision}'; choose one of {', '.join(PRECISIONS)}.")
    if config.batch_size < 1:
        raise TransferkitError(f"--batch-size must be at least 1, got {config.batch_size}.")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise TransferkitError("--device cuda was asked for but no CUDA device is available; use --device cpu.")
    if config.device != "cpu" and not config.device.startswith("cuda"):
        raise TransferkitError(f"Unknown device '{config.device}'; use cpu or cuda.")
    if config.strategy == "head" and not config.freeze and config.unfreeze_last is None:
        raise TransferkitError("Strategy 'head' needs --freeze PATTERN... or --unfreeze-last N.")
    return phases


def prepare(
    config: TrainConfig,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    dist_ctx: DistContext | None = None,
) -> Prepared:
    """Check the settings, read and decode the data, build the model and load its weights."""
    dist_ctx = dist_ctx or DistContext()
    _validate_config(config)
    if dist_ctx.is_main:
        _check_out(Path(config.out), resume)
    dist_ctx.barrier()
    source = open_data(config.data)
    if source.val is None:
        train_items, val_items = split_items(source.train, val_fraction=config.val_fraction, seed=config.seed)
    else:
        train_items, val_items = source.train, source.val

    _seed_everything(config.seed)  # random initialisation (scratch, new layers) follows --seed too
    model = create_model(config.model, num_classes=len(source.class_names), in_chans=config.in_chans)
    report = None
    if config.weights and config.strategy != "scratch" and not resume:
        report = load_pretrained(model, config.weights, min_loaded=config.min_loaded).to_dict()
    zero_init_head(model)
    pre = _preprocessing(config, model)
    size = pre.input_size[1]
    started = time.perf_counter()
    # Both sets share one memory budget; what does not fit is memory-mapped in the run folder.
    budget = memory_budget()
    train = decode(train_items, pre, spill_dir=Path(config.out), max_memory_bytes=budget)
    left = budget - (train.nbytes if train.storage == "in memory" else 0)
    val = decode(val_items, pre, spill_dir=Path(config.out), max_memory_bytes=left)
    skipped = train.skipped + val.skipped
    if skipped and config.strict_data:
        listed = "; ".join(f"{name}: {why}" for name, why in skipped[:5])
        raise DataError(f"{len(skipped)} unusable images (--strict-data): {listed}")
    for split_name, part in (("train", train), ("validation", val)):
        present = set(part.labels.tolist())
        if len(present) < 2:
            raise DataError(f"The {split_name} set has fewer than two classes after skipping unusable images.")
    log(
        f"data: {len(train.labels)} train, {len(val.labels)} val images, {len(source.class_names)} classes, "
        f"decoded at {size} px in {time.perf_counter() - started:.1f} s"
        + "".join(
            f"; {name} images {d.storage}" for name, d in (("train", train), ("val", val)) if d.storage != "in memory"
        )
        + (f"; {len(skipped)} unusable images skipped" if skipped else "")
    )
    return Prepared(
        config,
        model,
        find_head(model),
        source.class_names,
        pre,
        ImageDataset(train),
        ImageDataset(val),
        skipped,
        report,
        source.fingerprint(),
    )


def zero_init_head(model: nn.Module) -> None:
    """Start the new head at zero, as BiT does: every class starts equally likely.

    Initialisations meant for 1000 classes (timm's EfficientNet draws from U(+-1/sqrt(out))) give
    a 10-class head logits of size ~10 on pretrained features, and the first epochs are spent
    undoing them.
    """
    head = model.get_submodule(find_head(model))
    with torch.no_grad():
        for param in head.parameters():
            param.zero_()


def _augment_for(config: TrainConfig, phase: Phase) -> str:
    if config.augment != "auto":
        return config.augment
    return "light" if phase.trains == "all" else "none"


def _log_fast(log, use: str, chosen: FastPath) -> None:
    fmt = "channels-last" if chosen.channels_last else "NCHW"
    log(f"fast path for {use}: {fmt} {chosen.precision}, {chosen.reason}")


def _prepare_cache(model: nn.Module, prepared: Prepared, device: torch.device, log, *, augment: str):
    """Cached activations of the frozen prefix for train (one set per view) and val, or None (and why, in the log).

    With random augmentation, ``cache_views`` augmented copies of the training set are computed
    once and the epochs cycle through them.
    """
    config = prepared.config
    boundary = find_boundary(model, prepared.preprocessing.input_size)
    if boundary is None:
        log("cache: off, the first layer to run already trains")
        return None
    infer = prepared.fast_inference
    infer_prep = BatchPrep(prepared.preprocessing, device, infer.channels_last)
    difference = check_boundary(model, boundary, prepared.train.decoded.images[:8], prep=infer_prep)
    if difference is None or difference > 1e-4:
        log(f"cache: off, the network does more than run its modules in sequence at '{boundary.path}'")
        return None
    started = time.perf_counter()
    computed_with = {
        **asdict(prepared.preprocessing),
        "precision": infer.precision,
        "channels_last": infer.channels_last,
    }
    key = cache_key(model, boundary, data_fingerprint=prepared.data_fingerprint, preprocessing=computed_with)

    # The prefix runs with its BatchNorms folded into the convolutions when that gives the same output.
    runner = fold_batchnorm(model, boundary, prepared.train.decoded.images[:8], prep=infer_prep) or model
    runner.to(memory_format=torch.channels_last if infer.channels_last else torch.contiguous_format)

    def compute(dataset, seed: int | None = None):
        def batches():  # a pass may run twice (fp16, then float32): each draws the same augmentation
            if seed is not None:
                torch.manual_seed(seed)
            for images, _ in DataLoader(dataset, batch_size=infer.inference_batch_size):
                yield images

        return lambda: iter_boundary_outputs(
            runner, boundary, batches(), prep=infer_prep, autocast=lambda: autocast(device, infer.precision)
        )

    folder = Path(config.out) / "cache"
    model.to(memory_format=torch.channels_last if infer.channels_last else torch.contiguous_format)
    views = []
    for view in range(config.cache_views if augment != "none" else 1):
        seed = config.seed * 7919 + view if augment != "none" else None  # each view is one draw of the augmentation
        acts, how = load_or_compute(
            compute(prepared.train, seed),
            len(prepared.train),
            folder=folder,
            key=f"{key}-train-{augment}-{config.seed}-{view}",
        )
        views.append(acts)
    prepared.train.transform = None
    val_acts, _ = load_or_compute(compute(prepared.val), len(prepared.val), folder=folder, key=f"{key}-val")
    described = f"{len(views)} augmented views of the training set, " if augment != "none" else ""
    count = len(views[0]) + len(val_acts)
    log(
        f"cache: '{boundary.path}' output {tuple(boundary.output_shape)} for {described}{count} "
        f"images computed once in {time.perf_counter() - started:.1f} s ({how}); {len(boundary.stubbed)} frozen "
        "modules are skipped every epoch"
    )
    four_d = val_acts.dim() == 4 and infer.channels_last

    def prep(acts: torch.Tensor) -> torch.Tensor:
        x = acts.to(device, non_blocking=True).float()
        return x.contiguous(memory_format=torch.channels_last) if four_d else x

    return (
        [TensorDataset(acts, prepared.train.decoded.labels) for acts in views],
        TensorDataset(val_acts, prepared.val.decoded.labels),
        prep,
        boundary,
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])


def _loader(dataset, *, batch_size: int, shuffle: bool, seed: int, dist_ctx: DistContext, drop_last: bool):
    if dist_ctx.enabled and shuffle:
        sampler = DistributedSampler(
            dataset, num_replicas=dist_ctx.world_size, rank=dist_ctx.rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    if dist_ctx.enabled:
        # Evaluation shards without padding, so that reduced counts are exact.
        dataset = Subset(dataset, range(dist_ctx.rank, len(dataset), dist_ctx.world_size))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last)


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save, atomically: write beside, then rename."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def fit(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train a run, or continue one from ``resume``; returns the summary also written to ``report.json``.

    Args:
        stop_after: stop once this many epochs (of the whole run) are done; ``resume`` continues.

    Example:
        >>> fit(TrainConfig(model="tf_efficientnet_lite0", weights="lite0", data="builtin:digits",
        ...                 strategy="freeze", epochs=3, image_size=64, out="runs/probe"))["best_val_acc"]
        0.93...
    """
    state = None
    if resume is not None:
        state = load_run(resume)
        config = TrainConfig.from_dict(state["config"])
    if config is None:
        raise TransferkitError("fit needs a TrainConfig or a run folder to resume.")
    dist_ctx = init_from_env(config.device)
    if not dist_ctx.is_main:
        log = _silent
    phases = _validate_config(config)
    prepared = prepare(config, resume=state is not None, log=log, dist_ctx=dist_ctx)
    out = Path(config.out)
    device = torch.device(config.device if not config.device.startswith("cuda") else f"cuda:{dist_ctx.local_rank}")
    model = prepared.model.to(device)
    pinned = None if config.precision == "auto" else config.precision
    probe = partial(
        choose_fast_path,
        model,
        prepared.preprocessing.input_size,
        device=device,
        batch_size=min(config.batch_size, 64),
        channels_last=config.channels_last,
        precision=pinned,
    )
    saved = state or {}  # a resumed run keeps the kernels it chose: resuming is exact
    if saved.get("fast_path_inference"):
        prepared.fast_inference = FastPath(**saved["fast_path_inference"])
    else:
        # Batches larger than the data would never run: they are not measured.
        largest = max(len(prepared.train), len(prepared.val))
        prepared.fast_inference = probe(
            train=False, batch_size=min(config.batch_size, 16), max_batch_size=min(256, largest)
        )
        _log_fast(log, "inference (frozen layers, evaluation)", prepared.fast_inference)
    if saved.get("fast_path"):
        prepared.fast = FastPath(**saved["fast_path"])
    num_classes = len(prepared.class_names)

    history: list[dict] = []
    best_acc, start_phase, start_epoch = -1.0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        history, best_acc = state["history"], state["best_val_acc"]
        start_phase, start_epoch = state["phase"], state["phase_epoch"] + 1
        if start_epoch >= phases[start_phase].epochs:
            start_phase, start_epoch = start_phase + 1, 0
        log(f"resuming {out} after epoch {state['epoch']} (phase {phases[min(start_phase, len(phases) - 1)].name})")
    elif prepared.load_report is not None:
        r = prepared.load_report
        log(
            f"weights: {config.weights}: {len(r['matched'])} tensors loaded, {r['loaded_fraction']:.1%} of parameters"
            f" ({', '.join(f'{n} by {k}' for k, n in r['how'].items())}); head '{prepared.head}' is new"
        )
    if dist_ctx.is_main and state is None:
        write_json(out / "config.json", config.to_dict())

    writer = _tensorboard(out) if dist_ctx.is_main else None
    epoch_index = sum(p.epochs for p in phases[:start_phase]) + start_epoch
    run_started = time.perf_counter()
    elapsed_before = history[-1]["cumulative_seconds"] if history else 0.0
    try:
        for phase_index in range(start_phase, len(phases)):
            phase = phases[phase_index]
            apply_phase(
                model,
                phase,
                head=prepared.head,
                freeze_patterns=config.freeze,
                unfreeze_last=config.unfreeze_last,
                train_bn=config.train_bn,
            )
            augment = _augment_for(config, phase)
            phase_started = time.perf_counter()
            prepared.train.transform = augmentation(augment, prepared.preprocessing.input_size[1])
            cacheable = config.cache and (augment == "none" or config.cache_views > 0)
            cache = _prepare_cache(model, prepared, device, log, augment=augment) if cacheable else None
            if cache is not None:
                train_views, val_set, prep, boundary = cache
                # What trains is the tail after the cached prefix, in the prefix's memory format.
                path = FastPath(prepared.fast_inference.channels_last, pinned or "fp32", "tail after the cache")
            else:
                if prepared.fast is None:  # measured when the whole network first trains
                    prepared.fast = probe(train=True)
                    _log_fast(log, "training", prepared.fast)
                path = prepared.fast
                prep = BatchPrep(prepared.preprocessing, device, path.channels_last)
                train_views, val_set, boundary = [prepared.train], prepared.val, None
            model.to(memory_format=torch.channels_last if path.channels_last else torch.contiguous_format)
            cached = boundary is not None
            skipping = partial(truncated, model, boundary) if cached else nullcontext
            log(f"phase {phase.name}: {_trainable_text(model)}, augmentation {augment}")
            net = model
            train_net = net
            if dist_ctx.enabled:
                train_net = nn.parallel.DistributedDataParallel(
                    net, device_ids=[device.index] if device.type == "cuda" else None
                )
            optimizer = create_optimizer(
                net, "adamw", lr=phase.lr, weight_decay=config.weight_decay, layer_decay=phase.layer_decay
            )
            per_rank = len(train_views[0]) // dist_ctx.world_size
            drop_last = per_rank > config.batch_size
            steps = (per_rank // config.batch_size if drop_last else math.ceil(per_rank / config.batch_size)) or 1
            scheduler = warmup_cosine(optimizer, steps * phase.epochs, config.warmup_fraction)
            # fp16 gradients underflow without loss scaling, on any device.
            scaler = torch.amp.GradScaler(device.type) if path.precision == "fp16" else None
            if state is not None and phase_index == state["phase"] and start_epoch > 0:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                if scaler is not None and state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
                _set_rng_state(state["rng"])
            # Cached activations feed only the tail: large batches; images: the measured inference batch.
            val_batch = 256 if cached else prepared.fast_inference.inference_batch_size
            val_loader = _loader(
                val_set, batch_size=val_batch, shuffle=False, seed=0, dist_ctx=dist_ctx, drop_last=False
            )

            for phase_epoch in range(start_epoch if phase_index == start_phase else 0, phase.epochs):
                epoch_started = time.perf_counter()
                _seed_everything(config.seed * 1000 + epoch_index)
                train_loader = _loader(
                    train_views[epoch_index % len(train_views)],
                    batch_size=config.batch_size,
                    shuffle=True,
                    seed=config.seed * 1000 + epoch_index,
                    dist_ctx=dist_ctx,
                    drop_last=drop_last,
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
                        precision=path.precision,
                        scaler=scaler,
                        dist_ctx=dist_ctx,
                        progress=f"epoch {epoch_index + 1}/{config.epochs}",
                    )
                    metrics = evaluate(
                        net,
                        val_loader,
                        num_classes=num_classes,
                        prep=prep,
                        device=device,
                        precision=path.precision,
                        dist_ctx=dist_ctx,
                    )
                seconds = time.perf_counter() - epoch_started
                if phase_epoch == 0:
                    seconds = time.perf_counter() - phase_started  # the cache is this epoch's cost
                epoch_index += 1
                result = EpochResult(
                    epoch_index, phase.name, train_loss, metrics["loss"], metrics["accuracy"], lr_now, seconds, cached
                ).to_dict()
                result["cumulative_seconds"] = elapsed_before + time.perf_counter() - run_started
                history.append(result)
                improved = metrics["accuracy"] > best_acc
                best_acc = max(best_acc, metrics["accuracy"])
                log(
                    f"epoch {epoch_index}/{config.epochs} [{phase.name}] train_loss {train_loss:.4f} "
                    f"val_loss {metrics['loss']:.4f} val_acc {metrics['accuracy']:.4f} ({seconds:.1f} s)"
                )
                if dist_ctx.is_main:
                    checkpoint = _checkpoint_state(
                        prepared, model, optimizer, scheduler, scaler, history, best_acc, phase_index, phase_epoch
                    )
                    save_checkpoint(out / "last.pt", checkpoint)
                    if improved:
                        save_checkpoint(out / "best.pt", checkpoint)
                    _write_metrics(out / "metrics.csv", history)
                    if writer is not None:
                        for key in ("train_loss", "val_loss", "val_acc", "lr"):
                            writer.add_scalar(key, result[key], epoch_index)
                        writer.flush()
                if stop_after is not None and epoch_index >= stop_after:
                    return _summary(prepared, history, best_acc, model, stopped=True, write=dist_ctx.is_main)
            start_epoch = 0
    finally:
        if writer is not None:
            writer.close()
        dist_ctx.barrier()
    return _summary(prepared, history, best_acc, model, stopped=False, write=dist_ctx.is_main)


def _silent(message: str) -> None:
    pass


def _trainable_text(model: nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} of {total:,} parameters train"


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; a broken install should not stop training
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _checkpoint_state(
    prepared, model, optimizer, scheduler, scaler, history, best_acc, phase_index, phase_epoch
) -> dict:
    config = prepared.config
    return {
        "format": RUN_FORMAT,
        "config": config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": history[-1]["epoch"],
        "phase": phase_index,
        "phase_epoch": phase_epoch,
        "frozen": [n for n, p in model.named_parameters() if not p.requires_grad],
        "rng": _rng_state(),
        "history": history,
        "best_val_acc": best_acc,
        "class_names": prepared.class_names,
        "preprocessing": asdict(prepared.preprocessing),
        "head": prepared.head,
        "data_fingerprint": prepared.data_fingerprint,
        "fast_path": prepared.fast.to_dict() if prepared.fast else None,
        "fast_path_inference": prepared.fast_inference.to_dict(),
    }


def _write_metrics(path: Path, history: list[dict]) -> None:
    columns = ["epoch", "phase", "train_loss", "val_loss", "val_acc", "lr", "seconds", "cumulative_seconds", "cached"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def _summary(prepared: Prepared, history, best_acc, model, *, stopped: bool, write: bool) -> dict:
    summary = {
        "out": prepared.config.out,
        "model": prepared.config.model,
        "weights": prepared.config.weights,
        "strategy": prepared.config.strategy,
        "best_val_acc": best_acc,
        "epochs": history,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "seconds": history[-1]["cumulative_seconds"] if history else 0.0,
        "skipped_images": [{"name": n, "reason": r} for n, r in prepared.skipped],
        "stopped_early": stopped,
        "load_report": prepared.load_report,
    }
    if write:
        write_json(Path(prepared.config.out) / "report.json", summary)
    return summary


def load_run(path: str | Path, *, which: str = "last") -> dict:
    """A run's checkpoint (``last`` or ``best``), read without executing any pickled code."""
    folder = Path(path)
    file = folder / f"{which}.pt" if folder.is_dir() else folder
    if not file.is_file():
        raise TransferkitError(
            f"'{path}' is not a transferkit run: {file.name} is missing. Give the --out folder of a run."
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TransferkitError(f"Run checkpoint '{file}' cannot be read: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(state, dict) or state.get("format") != RUN_FORMAT:
        raise TransferkitError(f"'{file}' is not a transferkit run checkpoint.")
    return state
