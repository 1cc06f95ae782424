"""The one description of a training run: defaults, help and validation in one dataclass.

Every layer reads from here: ``fit`` takes a :class:`TrainConfig`; the command line builds its
options from the fields' defaults and help; ``compare`` and the demo derive theirs from one base
config with :func:`dataclasses.replace`. This module imports no torch, so that ``--help``
answers at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from ..data.augment import AUGMENTATIONS
from ..errors import ConfigError
from ..tasks.scores import MONITORS, TASK_MONITORS
from ..tasks.targets import TASKS, LabelSpec
from .strategies import STRATEGIES, plan_phases

if TYPE_CHECKING:
    from ..data.hub_data import HfOptions

__all__ = [
    "BALANCES",
    "IMBALANCED",
    "OPTIMIZERS",
    "PRECISIONS",
    "LOSSES",
    "TASK_FIELDS",
    "TrainConfig",
    "describe",
    "read_config_file",
    "setting_default",
]

# What a command that searches or probes needs to read DATA: a CSV of several labels or of numbers, a
# Hugging Face dataset
TASK_FIELDS = (
    "task",
    "label_sep",
    "label_columns",
    "target_column",
    "loss",
    "hf_config",
    "hf_revision",
    "image_column",
    "label_column",
)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("auto", "on", "off")  # --compile: decided by measurement, always, never
BALANCES = ("auto", "none", "weighted", "sampler")
TRACKERS = ("none", "mlflow")  # besides metrics.csv and TensorBoard: transferkit.train.folder.tracking
IMBALANCED = 2.0  # largest class over smallest beyond which data counts as imbalanced (BENCHMARKS.md)
OPTIMIZERS = ("adamw", "adam", "sgd")
LOSSES = ("auto", "mse", "huber")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _setting(default=MISSING, help: str = "", **kwargs):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint. Unknown keys and bad values are rejected.

    Examples:
        >>> TrainConfig(model="resnet18", data="builtin:digits", out="runs/a", epochs=0)
        Traceback (most recent call last):
        ConfigError: epochs must be at least 1, got 0.
    """

    model: str = _setting(help="timm name (resnet34), torchvision:NAME, path/to/model.py:factory or module:factory.")
    data: str = _setting(help="Image folder, CSV of path,label, WebDataset shards (wds:PATH), or builtin:NAME.")
    out: str = _setting(help="Run folder: checkpoints, metrics.csv, report.json, TensorBoard logs.")
    weights: str | None = _setting(
        "auto",
        "Pretrained weights: auto (MODEL's own: the lite0-2 records installed, timm's pretrained tag, "
        "torchvision's DEFAULT, a transformers repo's; strategies other than full and scratch are refused where "
        "MODEL has none), none (random values), a file, lite0, timm:TAG, hf-hub:ORG/REPO, torchvision:ENUM or a URL.",
    )
    strategy: str = _setting(
        "full", f"One of {', '.join(STRATEGIES)}, or auto: the one advise's linear probes recommend."
    )
    budget: float | None = _setting(
        None, "With strategy auto: seconds the run may take, the probe included; the advice trains less to fit."
    )
    epochs: int = _setting(5, "Epochs in all, across the strategy's phases.")
    batch_size: int = _setting(64, "Training batch size.")
    # auto: found by the learning-rate range test before training (one-phase strategies).
    lr: float | str | None = _setting(None, "Main learning rate, or auto (default: the strategy's for each phase).")
    optimizer: str = _setting("adamw", f"One of {', '.join(OPTIMIZERS)}.")
    weight_decay: float = _setting(0.01, "Decoupled weight decay; biases and norm weights get none.")
    head_lr: float | None = _setting(None, "Learning rate of the head (default: the phase's rate).")
    # None: the strategy's own (gradual: 0.85); a value applies to every phase that trains all layers.
    layer_decay: float | None = _setting(
        None, "Scale each earlier layer's rate by this (timm's layer groups; 0 < x <= 1)."
    )
    label_smoothing: float = _setting(0.1, "Label smoothing of the cross-entropy loss (0 <= x < 1).")
    drop_path: float = _setting(
        0.0, "Stochastic depth: timm's drop_path_rate (0.1 is usual for ViTs; 0: off); for timm models that have it."
    )
    # auto: cross-entropy for classes, binary cross-entropy per label, mse for numbers.
    loss: str = _setting("auto", f"For regression: {', '.join(LOSSES)} (Huber on the standardised target).")
    warmup_fraction: float = _setting(0.1, "Share of each phase's steps of linear warmup, then cosine decay to 0.")
    seed: int = _setting(0, "Seed of the split, the initialisation and the batch order.")
    device: str = _setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N.")
    image_size: int | None = _setting(None, "Train at this size in pixels (default: the weights' own).")
    # auto: none while a frozen prefix exists (so that its output can be cached), else light.
    augment: str = _setting("auto", f"auto, {', '.join(AUGMENTATIONS)}.")
    mixup: float = _setting(0.0, "MixUp alpha (timm's Mixup; 0: off, 0.2 is usual).")
    cutmix: float = _setting(0.0, "CutMix alpha (timm's Mixup; 0: off, 1.0 is usual).")
    val_fraction: float = _setting(0.2, "Held out for validation when DATA has no val folder.")
    train_images: int | None = _setting(
        None, "Train on a stratified sample of N training images (default: all); validation keeps all of its own."
    )
    task: str = _setting(
        "classification", f"What to predict: {', '.join(TASKS)} (the last two from a CSV: see --label-sep)."
    )
    label_sep: str = _setting(";", "For multi-label: what joins the labels in the CSV's labels column.")
    label_columns: list[str] = _setting(
        [], "For multi-label: the CSV's 0/1 columns, one per label, instead of a labels column (a,b,c)."
    )
    target_column: str | None = _setting(None, "For regression: the CSV's numeric column (default: target).")
    # Hugging Face datasets as DATA (hf:ORG/NAME, parquet, arrow, imagefolder with metadata): transferkit.data.hub_data
    hf_config: str | None = _setting(None, "For hf: DATA: the dataset's configuration (subset) name.")
    hf_revision: str | None = _setting(None, "For hf: DATA: the branch, tag or commit of the dataset repository.")
    image_column: str | None = _setting(None, "For Hugging Face datasets: the image column (default: the one image).")
    label_column: str | None = _setting(
        None, "For Hugging Face datasets: the label column (default: the one ClassLabel, else label or labels)."
    )
    freeze: list[str] = _setting([], "For strategy head: module path, glob or re:REGEX to freeze; repeatable.")
    unfreeze_last: int | None = _setting(
        None, "For strategy head: train only the last N stages (transformer blocks for ViTs, the head counts as one)."
    )
    train_bn: bool = _setting(False, "Let frozen BatchNorm layers keep updating their statistics.")
    # LoRA/DoRA: rank 8 and alpha 16 (scale 2) are peft's and the LoRA paper's usual starting point.
    lora_rank: int = _setting(8, "For strategies lora and dora: rank of each adapter.")
    lora_alpha: float = _setting(16.0, "For lora and dora: the adapters' scale is alpha / rank.")
    lora_dropout: float = _setting(0.0, "For lora and dora: dropout on each adapter's input (0 <= x < 1).")
    lora_targets: list[str] = _setting(
        [], "For lora and dora: layers to adapt, as paths, globs or re:; repeatable (default: per family)."
    )
    bitfit_norms: bool = _setting(False, "For strategy bitfit: train the normalisation layers' weights too.")
    strict_data: bool = _setting(False, "Fail before training if any image is unusable.")
    # auto: sampler when the largest class has over 3x the images of the smallest (BENCHMARKS.md).
    balance: str = _setting("auto", f"Class imbalance: {', '.join(BALANCES)}.")
    # auto: balanced_acc on imbalanced data (as balance), else acc.
    monitor: str = _setting("auto", f"What chooses best.pt: {', '.join(('auto', *MONITORS))}.")
    patience: int | None = _setting(None, "End a phase after N epochs without a better monitored value.")
    cache: bool = _setting(True, "Compute the output of frozen layers once instead of every epoch.")
    # With random augmentation the cache is off unless this asks for K augmented copies.
    cache_views: int = _setting(0, "With augmentation: cache K augmented views of the frozen layers' output.")
    # Shards read anew each epoch, nothing decoded up front: for training sets larger than memory and disk.
    stream: bool = _setting(
        False,
        "For wds: and Hugging Face DATA: stream the training shards or split each epoch (a shuffle buffer) "
        "instead of decoding them once.",
    )
    channels_last: bool | None = _setting(None, "Memory format (default: measured per model).")
    precision: str = _setting("auto", f"{', '.join(PRECISIONS)} (auto: measured per model).")
    reprobe: bool = _setting(False, "Measure the kernels again instead of reusing this machine's last decision.")
    # auto: measured when a phase trains long enough to repay a compile (minutes on a CPU), kept per machine.
    compile: str = _setting("auto", f"torch.compile of the training step: {', '.join(COMPILE_MODES)}.")
    # FSDP2 per stage: each process keeps 1/N of the parameters, gradients and optimizer state.
    shard_params: bool = _setting(
        False, "Under torchrun: shard parameters, gradients and optimizer state across the processes (FSDP)."
    )
    # MLflow: parameters, per-epoch metrics, the model card and report (transferkit.train.folder.tracking)
    track: str = _setting("none", f"Record the run in an experiment tracker too: {', '.join(TRACKERS)}.")
    tracking_uri: str | None = _setting(
        None, "For track mlflow: the tracking server (default: MLFLOW_TRACKING_URI, else a store in the run folder)."
    )
    mlflow_experiment: str = _setting("transferkit", "For track mlflow: the experiment the run is recorded in.")
    in_chans: int | None = _setting(None, "Input channels (1 for grayscale); RGB weights are adapted.")
    # Half the parameters outside the head: below that the file is for another architecture.
    min_loaded: float = _setting(0.5, "Fail when less than this share of non-head parameters would load.")
    allow_nonfinite: bool = _setting(False, "Load pretrained weights even if they hold NaN or infinity.")

    def __post_init__(self) -> None:
        self.freeze = list(self.freeze or [])
        self.lora_targets = list(self.lora_targets or [])
        # "a,b,c" or repeated: one list of names
        given = [self.label_columns] if isinstance(self.label_columns, str) else self.label_columns or []
        self.label_columns = [n.strip() for c in given for n in str(c).split(",") if n.strip()]
        _check(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown training settings: {', '.join(unknown)}.")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def label_spec(self) -> LabelSpec:
        """Where DATA's CSV holds each image's labels, for this run's task."""
        return LabelSpec(self.task, self.label_sep, tuple(self.label_columns), self.target_column)

    def hf_options(self) -> HfOptions:
        """Which Hugging Face dataset DATA names, and its image and label columns."""
        from ..data.hub_data import HfOptions  # imports torch: not at the configuration's import

        return HfOptions(self.hf_config, self.hf_revision, self.image_column, self.label_column, self.stream)

    @property
    def pinned_precision(self) -> str | None:
        """The precision the user fixed, or None where it is measured (``auto``)."""
        return None if self.precision == "auto" else self.precision

    def phases(self):
        """The strategy's phases (see :func:`transferkit.train.strategies.plan_phases`)."""
        return plan_phases(
            self.strategy,
            self.epochs,
            lr=None if self.lr == "auto" else self.lr,
            layer_decay=self.layer_decay,
            freeze_patterns=self.freeze,
            unfreeze_last=self.unfreeze_last,
        )


def setting_default(name: str):
    """The default of a :class:`TrainConfig` field (a fresh list for list fields)."""
    f = _field(name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def describe(name: str) -> str:
    """The help text of a :class:`TrainConfig` field."""
    return _field(name).metadata["help"]


def _field(name: str):
    return next(f for f in fields(TrainConfig) if f.name == name)


class _Checks:
    """The refusals of one :class:`TrainConfig`: each names its argument, the rule and the value given."""

    def __init__(self, config: TrainConfig):
        self.c = config

    def fail(self, argument: str, problem: str):
        raise ConfigError(f"{argument} {problem}, got {getattr(self.c, argument)!r}.", argument=argument)

    def choose(self, argument: str, choices) -> None:
        if getattr(self.c, argument) not in choices:
            self.fail(argument, f"must be one of {', '.join(choices)}")

    def number(
        self, argument: str, *, low=None, high=None, low_open=False, high_open=False, optional=False, integer=False
    ):
        value = getattr(self.c, argument)
        if value is None and optional:
            return
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail(argument, "must be a whole number")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(argument, "must be a finite number")
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            left = "(" if low_open or low is None else "["
            right = ")" if high_open or high is None else "]"
            span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
            self.fail(argument, f"must be in {span}")


def _check(c: TrainConfig) -> None:
    checks = _Checks(c)
    _check_choices(c, checks)
    _check_task(c, checks)
    _check_numbers(c, checks)
    if c.strategy != "auto":  # auto's phases are known once the probe has chosen the strategy
        c.phases()  # two-phase strategies need two epochs, strategy head what to freeze


def _check_choices(c: TrainConfig, checks: _Checks) -> None:
    fail, choose, number = checks.fail, checks.choose, checks.number
    for argument in ("model", "data", "out"):
        if not isinstance(getattr(c, argument), str) or not getattr(c, argument):
            fail(argument, "must be given")
    if c.weights is not None and (not isinstance(c.weights, str) or not c.weights.strip()):
        fail("weights", "must be auto, none, or pretrained weights (a file, lite0, timm:TAG, hf-hub:ORG/REPO ...)")
    choose("strategy", ("auto", *STRATEGIES))
    choose("optimizer", OPTIMIZERS)
    choose("precision", PRECISIONS)
    choose("compile", COMPILE_MODES)
    choose("augment", ("auto", *AUGMENTATIONS))
    choose("balance", BALANCES)
    for argument in ("mixup", "cutmix"):
        number(argument, low=0)
    if (c.mixup or c.cutmix) and c.balance == "weighted":
        fail("balance", "cannot be weighted with mixup or cutmix, whose targets are mixed; use sampler")
    choose("monitor", ("auto", *MONITORS))
    choose("task", TASKS)
    choose("loss", LOSSES)


def _check_task(c: TrainConfig, checks: _Checks) -> None:
    """What each task takes (its monitors, no mixing of classes where it has none, its balance and loss), and the
    settings that exclude each other."""
    fail, choose = checks.fail, checks.choose
    if c.task != "classification":
        if c.monitor not in ("auto", *TASK_MONITORS[c.task]):
            fail("monitor", f"must be one of auto, {', '.join(TASK_MONITORS[c.task])} for task {c.task}")
        if c.mixup or c.cutmix:
            fail("mixup" if c.mixup else "cutmix", f"mixes classes; task {c.task} has none: leave it at 0")
        if c.balance == "sampler" or (c.task == "regression" and c.balance == "weighted"):
            fail(
                "balance",
                f"{c.balance} balances classes; task {c.task} takes auto or none"
                + (" (or weighted: a positive weight per label)" if c.task == "multi-label" else ""),
            )
    elif c.monitor not in ("auto", *TASK_MONITORS["classification"]):
        fail("monitor", f"must be one of auto, {', '.join(TASK_MONITORS['classification'])} for classification")
    if c.lr == "auto" and c.task != "classification":
        fail("lr", f"auto's range test trains classes; for task {c.task} give a rate")
    if c.loss != "auto" and c.task != "regression":
        fail("loss", f"{c.loss} is for regression; task {c.task} takes auto")
    if c.task == "multi-label" and not c.label_columns and not (isinstance(c.label_sep, str) and c.label_sep.strip()):
        fail("label_sep", "must be a visible character such as ';' or '|'")
    choose("track", TRACKERS)
    if c.stream and (c.strategy == "auto" or c.lr == "auto" or c.balance == "sampler"):
        named = "strategy" if c.strategy == "auto" else "lr" if c.lr == "auto" else "balance"
        fail(named, "needs the decoded training images, which stream does not keep; give a value (balance: weighted)")
    if c.shard_params and c.precision == "fp16":
        fail("precision", "cannot be fp16 with shard_params, whose gradients have no loss scaling; use bf16")


def _check_numbers(c: TrainConfig, checks: _Checks) -> None:
    fail, number = checks.fail, checks.number
    number("patience", low=1, optional=True, integer=True)
    if not isinstance(c.device, str) or not _DEVICE.match(c.device):
        fail("device", "must be auto, cpu, cuda or cuda:N")
    for argument in ("epochs", "batch_size"):
        number(argument, low=1, integer=True)
    number("image_size", low=8, optional=True, integer=True)  # smaller leaves a convolution nothing to see
    number("in_chans", low=1, optional=True, integer=True)
    number("unfreeze_last", low=1, optional=True, integer=True)
    number("budget", low=0, low_open=True, optional=True)
    if c.budget is not None and c.strategy != "auto":  # the chosen strategy's run holds none (advice.json does)
        checks.fail("budget", f"is for strategy auto, which chooses within it; strategy {c.strategy} takes its time")
    number("cache_views", low=0, integer=True)
    number("lora_rank", low=1, integer=True)
    number("lora_alpha", low=0, low_open=True)
    number("lora_dropout", low=0, high=1, high_open=True)
    number("seed", low=0, integer=True)
    auto = c.strategy == "auto"  # its phases are known once the probe has chosen the strategy
    if c.lr == "auto" and (auto or len(c.phases()) > 1):
        has = "may have" if auto else "has"
        fail("lr", f"auto finds one rate, and strategy {c.strategy} {has} two phases: run lr-find and give lr")
    for argument in ("head_lr",) if c.lr == "auto" else ("lr", "head_lr"):
        number(argument, low=0, low_open=True, optional=True)
    number("weight_decay", low=0)
    number("layer_decay", low=0, high=1, low_open=True, optional=True)
    number("label_smoothing", low=0, high=1, high_open=True)
    number("drop_path", low=0, high=1, high_open=True)
    number("warmup_fraction", low=0, high=1, high_open=True)
    number("val_fraction", low=0, high=1, low_open=True, high_open=True)
    number("train_images", low=2, optional=True, integer=True)
    number("min_loaded", low=0, high=1)


def read_config_file(path: str) -> dict:
    """Training settings from a JSON object (``sweep``'s ``best_config.json``), unknown names refused.

    The file may come from someone else: it is data, read as JSON, never run.
    """
    import json
    from pathlib import Path

    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' does not exist.", argument="config") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"Config file '{path}' is not valid JSON ({e}).", argument="config") from None
    if not isinstance(values, dict):
        raise ConfigError(f"Config file '{path}' holds {type(values).__name__}, not an object of settings.")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Config file '{path}' has unknown settings: {', '.join(unknown)}.", argument="config")
    return values
