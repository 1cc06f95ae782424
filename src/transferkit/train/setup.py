"""What a run is built from: the model with its weights, and the data decoded once.

Decoded data and the measured kernels do not depend on the strategy, so ``compare`` and the
demo prepare them once and hand them to every ``fit``; each run still builds its own model.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from .._storage import memory_budget
from ..data.csv_data import csv_task
from ..data.decode import Decoded, ImageDataset, decode, streamed
from ..data.items import SPLIT_FOLDERS, DataSource
from ..data.preprocess import Preprocessing
from ..data.sources import open_data, sibling_splits, split_items, stratified_sample
from ..errors import ConfigError, DataError, Unreachable
from ..model.factory import create_model, is_code_spec
from ..model.hf_transformers import is_transformers_model
from ..model.sizes import check_batch_memory
from ..model.surgery import find_head, tie_distillation_head
from ..runtime.fastpath import FastPath, resolve_device
from ..tasks.objective import TargetScale
from ..weights.auto import default_weights
from ..weights.loading import LoadPolicy, load_pretrained
from ..weights.preprocessing import resolve_preprocessing
from ..weights.verify import verify_weights
from .config import TrainConfig
from .data_facts import split_facts
from .parallel.distributed import spill_folder

__all__ = [
    "Kernels",
    "PreparedData",
    "assemble_data",
    "attach_adapters",
    "backbone_facts",
    "build_model",
    "choose_weights",
    "model_channels",
    "prepare_data",
    "preprocessing_for",
    "task_of_data",
    "weights_spec",
    "zero_init_head",
]


@dataclass
class PreparedData:
    """DATA split, decoded and checked for one preprocessing; shared by every strategy of a comparison."""

    spec: str
    class_names: list[str]
    preprocessing: Preprocessing
    train: ImageDataset
    val: ImageDataset
    skipped: list[tuple[str, str]]
    fingerprint: str
    # Images per class in each split, after skipping: {"train": {"cat": 450, ...}, "val": {...}}.
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    splits: str = ""  # where the splits came from, for the log and the report
    # Activations of frozen prefixes by cache key: a later run with the same frozen weights
    # (the head phase of gradual after freeze) reuses them instead of computing them again.
    activations: dict[str, tuple[torch.Tensor, str]] = field(default_factory=dict)
    # The head's input for every train and val image from strategy auto's probe, when it advised freeze.
    probe_features: dict[str, torch.Tensor] | None = None
    task: str = "classification"  # or multi-label (class_names are the labels), regression (the target's name)
    # Regression: the training targets' mean and scale, which the model's output is in units of.
    target_scale: TargetScale | None = None
    # Regression: each split's target distribution (count, mean, std, min, median, max).
    target_stats: dict[str, dict[str, float]] | None = None


@dataclass
class Kernels:
    """Memory format and precision measured fastest, for training and for inference (None: not yet)."""

    training: FastPath | None = None
    inference: FastPath | None = None
    # Inference kernels still to be chosen on the frozen layers' pass (a kernel_trial.InferenceTrial).
    inference_trial: object | None = None


def model_channels(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def choose_weights(config: TrainConfig) -> tuple[TrainConfig, str | None]:
    """``config`` with ``auto`` and ``none`` made what they stand for (a weights spec, or None for random
    values), and, for ``auto``, where the weights it found come from (None otherwise).

    ``auto`` finding no pretrained weights for a timm or torchvision MODEL is refused for every strategy
    that builds on pretrained features; ``full`` and ``scratch`` go on from random values, and say so
    (:func:`transferkit.train.engine.fit`'s first line). A transformers model brings its own weights,
    and the user's factory makes what it makes.
    """
    if config.weights != "auto":
        return (replace(config, weights=None) if config.weights == "none" else config), None
    if is_code_spec(config.model):
        return replace(config, weights=None), f"{config.model}'s factory makes its own (transferkit loads none)"
    if is_transformers_model(config.model):
        return replace(config, weights=None), "the transformers model's own"
    found = default_weights(config.model)
    if found.spec is None and config.strategy not in ("full", "scratch"):
        raise ConfigError(
            f"strategy {config.strategy} builds on pretrained features, and auto finds none for {config.model} "
            f"({found.why}): name them with weights (a file, lite0, timm:TAG, hf-hub:ORG/REPO, torchvision:ENUM, "
            f"a URL), or train on random features with weights none.",
            argument=("weights", "weights"),  # both: the command line names --weights twice
        )
    return replace(config, weights=found.spec), f"auto{'' if found.spec else ' finds none'}: {found.why}"


def task_of_data(config: TrainConfig) -> tuple[TrainConfig, str | None]:
    """``config`` with the task a CSV's columns say, where it asks for classes and the CSV has no ``label``
    column but ``labels`` (several labels) or ``target`` (a number); and the log's line saying so (None otherwise)."""
    found = csv_task(config.data) if config.task == "classification" else None
    if found is None:
        return config, None
    task, column = found
    note = (
        f"task: {task}, as the CSV's '{column}' column says (it has no 'label' column); --task (task=) chooses another"
    )
    return replace(config, task=task), note


def weights_spec(config: TrainConfig) -> str | None:
    """The weights ``config`` loads: a spec, or None for random values (``auto`` as :func:`choose_weights` finds)."""
    if config.weights == "auto":
        return choose_weights(replace(config, strategy="full"))[0].weights  # refusing is choose_weights' caller's
    return None if config.weights == "none" else config.weights


def preprocessing_for(config: TrainConfig, model: nn.Module) -> Preprocessing:
    """The weights' preprocessing (the model's own for a file), at ``image_size`` and the model's channels."""
    return resolve_preprocessing(model, weights_spec(config), image_size=config.image_size)[0]


def backbone_facts(config: TrainConfig, model: nn.Module) -> dict:
    """What the run keeps of the network it fine-tunes, beside its preprocessing.

    ``trained_size`` is the (H, W) the weights were trained at (their configuration's, else the
    model's own), ``input_size`` the run's; ``num_prefix_tokens`` is a ViT's class, register
    and distillation tokens (None for networks without tokens).
    """
    base = resolve_preprocessing(model, weights_spec(config))[0]
    prefix = getattr(model, "num_prefix_tokens", None)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return {
        "architecture": cfg.get("architecture") or type(model).__name__,
        "trained_size": list(base.input_size[1:]),
        "input_size": list(preprocessing_for(config, model).input_size[1:]),
        "num_prefix_tokens": prefix if isinstance(prefix, int) else None,
    }


def build_model(config: TrainConfig, num_classes: int, *, load_weights: bool = True) -> tuple[nn.Module, dict | None]:
    """MODEL with a head for ``num_classes``, its pretrained weights and a zeroed head; and the load report.

    A size whose batch cannot fit the training device's memory is refused before the model is
    built, and again after its dry run, which bounds the activations better.
    """
    if config.image_size is not None:
        _check_batch_memory(config)
    model = create_model(
        config.model,
        num_classes=num_classes,
        in_chans=config.in_chans,
        image_size=config.image_size,
        drop_path=config.drop_path,
    )
    if config.image_size is not None:
        _check_batch_memory(config, model)
    tie_distillation_head(model)  # new classes: a distilled model's two heads are one new head
    report = None
    weights = weights_spec(config) or getattr(model, "transferkit_weights", None)  # a transformers model brings its own
    if load_weights and weights and config.strategy != "scratch":
        policy = LoadPolicy(min_loaded=config.min_loaded, allow_nonfinite=config.allow_nonfinite)
        try:
            report = load_pretrained(model, weights, policy=policy).to_dict()
        except Unreachable as e:
            raise Unreachable(f"{e} To train without {weights}: weights none.", argument="weights") from None
        # The cheap check only; `transferkit load` adds the one on photos.
        report["verification"] = verify_weights(model, photos=False)
    zero_init_head(model)
    attach_adapters(model, config)
    return model, report


def _check_batch_memory(config: TrainConfig, model: nn.Module | None = None) -> None:
    device = resolve_device(config.device)
    memory, where = None, "this machine"
    if device.type == "cuda":
        memory, where = torch.cuda.get_device_properties(device).total_memory, f"the GPU {device}"
    check_batch_memory(
        config.image_size,
        batch=config.batch_size,
        channels=config.in_chans or (model_channels(model) if model is not None else 3),
        model=model,
        memory=memory,
        where=where,
    )


def attach_adapters(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Add the strategy's peft adapters (lora, dora) to the model, after its pretrained weights are in."""
    from .strategies import ADAPTER_STRATEGIES

    if config.strategy not in ADAPTER_STRATEGIES:
        return model
    from ..adapters import LoraSettings, inject_lora

    settings = LoraSettings(
        config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets, config.strategy == "dora"
    )
    return inject_lora(model, find_head(model), settings)


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


def _decode_rate(*parts: Decoded) -> str:
    images = sum(len(part.labels) + len(part.skipped) for part in parts)
    seconds = sum(part.seconds for part in parts)
    workers = max(part.workers for part in parts)
    return f"{images / max(seconds, 1e-9):,.0f} images/s, {workers} thread{'s' if workers > 1 else ''}"


def prepare_data(
    config: TrainConfig,
    *,
    source: DataSource | None = None,
    model: nn.Module | None = None,
    preprocessing: Preprocessing | None = None,
    log: Callable[[str], None] = print,
) -> PreparedData:
    """Split and decode DATA at the preprocessing ``model`` (built from ``config`` if None) needs, or at
    ``preprocessing`` (a resumed run's recorded one).

    Unusable images are skipped and listed (``strict_data`` fails on them instead). Both sets
    share one memory budget; what does not fit is memory-mapped in the run folder.
    """
    source = source or open_data(config.data, config.label_spec(), config.hf_options())
    train_items, val_items = _split(config, source)
    if model is None:
        model = create_model(
            config.model, num_classes=len(source.class_names), in_chans=config.in_chans, image_size=config.image_size
        )
    if preprocessing is None:
        pre, where = resolve_preprocessing(model, weights_spec(config), image_size=config.image_size)
    else:
        pre, where = preprocessing, "the run being resumed"
    started = time.perf_counter()
    budget = memory_budget()
    spill = spill_folder(Path(config.out))
    if config.stream:
        check_stream(config, source)
        train = streamed(train_items, pre)
    else:
        train = decode(train_items, pre, spill_dir=spill, max_memory_bytes=budget)
    left = budget - (train.nbytes if train.storage == "in memory" else 0)
    val = decode(val_items, pre, spill_dir=spill, max_memory_bytes=left)
    skipped = source.skipped + train.skipped + val.skipped
    if skipped and config.strict_data:
        listed = "; ".join(f"{name}: {why}" for name, why in skipped[:5])
        raise DataError(f"{len(skipped)} unusable files (strict_data): {listed}")
    for split_name, part in (("train", train), ("validation", val)) if source.task == "classification" else ():
        if len(set(part.labels.tolist())) < 2:
            raise DataError(f"The {split_name} set has fewer than two classes after skipping unusable images.")
    log(
        f"data: {len(train.labels)} train, {len(val.labels)} val images, {len(source.class_names)} classes, "
        f"decoded at {pre.size_text} in {time.perf_counter() - started:.1f} s "
        f"({_decode_rate(val) if config.stream else _decode_rate(train, val)})"
        + "".join(
            f"; {name} images {d.storage}" for name, d in (("train", train), ("val", val)) if d.storage != "in memory"
        )
        + (f"; {len(skipped)} unusable images skipped" if skipped else "")
    )
    log(
        f"preprocessing: {pre.size_text}, mean {tuple(round(v, 4) for v in pre.mean)}, "
        f"std {tuple(round(v, 4) for v in pre.std)}, {pre.interpolation}, {pre.crop_mode} crop {pre.crop_pct:g}, "
        f"from {where}"
    )
    splits = _splits_text(source, config)
    log(f"splits: {splits}")
    if source.val is None:
        _warn_unused_splits(config.data, log)
    return assemble_data(
        config.data,
        source.class_names,
        pre,
        train,
        val,
        task=source.task,
        fingerprint=source.fingerprint(),
        splits=splits,
        skipped=skipped,
        log=log,
    )


def _split(config: TrainConfig, source: DataSource) -> tuple[list, list]:
    """The training and validation items: DATA's own validation split, else a stratified one; the training items
    sampled (stratified) down to ``train_images``."""
    if source.val is None:
        train_items, val_items = split_items(source.train, val_fraction=config.val_fraction, seed=config.seed)
    else:
        train_items, val_items = source.train, source.val
    if config.train_images is not None and config.train_images < len(train_items):
        train_items = stratified_sample(train_items, config.train_images, seed=config.seed)
    return train_items, val_items


def _warn_unused_splits(data: str, log) -> None:
    """The split folders beside DATA that a split of DATA itself leaves unused, and the DATA that would use them."""
    beside = sibling_splits(data)
    if not beside:
        return
    roles = [
        f"validate on '{p.name}'" if p.name.lower() in SPLIT_FOLDERS["val"] else f"keep '{p.name}' apart"
        for p in beside
    ]
    log(
        f"warning: {' and '.join(repr(p.name) for p in beside)} beside '{data}' "
        f"{'is' if len(beside) == 1 else 'are'} not used: give --data {shlex.quote(str(Path(data).parent))}"
        f" to train on '{Path(data).name}', " + " and ".join(roles)
    )


def assemble_data(
    spec: str,
    class_names: list[str],
    pre: Preprocessing,
    train: Decoded,
    val: Decoded,
    *,
    task: str,
    fingerprint: str,
    splits: str,
    skipped: list[tuple[str, str]] = (),
    log: Callable[[str], None] = print,
) -> PreparedData:
    """The :class:`PreparedData` of decoded ``train`` and ``val`` images (DATA's, or a Dataset's), with the images
    per class or the targets' statistics logged and kept."""
    counts, stats, scale = split_facts(task, class_names, train, val, log=log)
    return PreparedData(
        spec,
        class_names,
        pre,
        ImageDataset(train),
        ImageDataset(val),
        list(skipped),
        fingerprint,
        class_counts=counts,
        splits=splits,
        task=task,
        target_scale=scale,
        target_stats=stats,
    )


def check_stream(config: TrainConfig, source: DataSource) -> None:
    """Refuse ``stream`` for DATA that is not WebDataset shards or a streamed Hugging Face dataset, before
    anything is written."""
    if not config.stream:
        return
    if not source.train or (source.train[0].shard is None and source.train[0].rows is None):
        raise DataError(
            f"stream reads WebDataset shards or a Hugging Face dataset; DATA '{config.data}' is neither. "
            "Write shards with transferkit shard.",
            argument="stream",
        )
    if source.train[0].rows is not None and config.train_images is not None:
        raise DataError(
            "train_images samples the training images, and a streamed dataset split is read whole; drop one.",
            argument="train_images",
        )


def _splits_text(source: DataSource, config: TrainConfig) -> str:
    if source.val is None:
        how = f"train and val split {1 - config.val_fraction:g}/{config.val_fraction:g} by seed {config.seed}"
    else:
        how = f"train from '{source.folders.get('train', 'train')}', val from '{source.folders.get('val', 'val')}'"
    if config.train_images is not None:
        how += f"; training on a stratified sample of at most {config.train_images} images (train_images)"
    if source.test is not None:
        how += f", test from '{source.folders.get('test', 'test')}' kept apart (eval --split test)"
    if "unused" in source.folders:
        how += f"; left out: the dataset's split {source.folders['unused']}"
    return how
