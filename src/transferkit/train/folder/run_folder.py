"""A run folder's files: ``last.pt`` and ``best.pt``, ``metrics.csv``, ``report.json``, ``config.json``.

A checkpoint holds everything needed to continue exactly or to use the model alone: model,
optimizer, scheduler and loss-scaler state, epoch and phase, RNG state, frozen parameters,
configuration, preprocessing, class names and the kernels measured fastest. Every file is
written atomically; checkpoints are read without running pickled code.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..._text import one_line
from ...adapters.lora import peft_model_of
from ...data.preprocess import Preprocessing
from ...errors import RunError
from ...model.factory import code_origin, create_model, is_code_spec
from ...model.surgery import tie_distillation_head
from ...runtime.fastpath import FastPath
from ...serialization import save_torch, write_json, write_text
from ...tasks.scores import MONITORS, TASK_SCORES
from ...torch_files import load_torch_file
from ..config import TrainConfig
from ..rng import rng_state
from ..setup import Kernels, PreparedData, attach_adapters

__all__ = [
    "RUN_FORMAT",
    "RunRecord",
    "check_model_code",
    "checkpoint_state",
    "load_model_state",
    "run_model",
    "load_run",
    "save_checkpoint",
    "summary",
    "write_metrics",
]

RUN_FORMAT = "transferkit-run/1"
_FAST_PATH_FIELDS = {f.name for f in dataclasses.fields(FastPath)}
_METRICS = ["epoch", "phase", "train_loss", "val_loss", "lr", "seconds", "cumulative_seconds", "cached"]
# Each task's validation scores, in the order metrics.csv gives them after val_loss.


@dataclass
class RunRecord:
    """What a run has done so far: the rows of ``metrics.csv`` and the best validation accuracy."""

    config: TrainConfig
    data: PreparedData
    kernels: Kernels
    head: str
    load_report: dict | None = None
    backbone: dict | None = None  # the network's trained size, the run's size, its prefix tokens
    advice: dict | None = None  # with strategy auto: the strategy the probe chose, and why
    history: list[dict] = field(default_factory=list)
    model_code: dict | None = None  # the user's file that builds the model, with its hash
    balance: str = "none"  # resolved from config.balance ("auto" decided by the data)
    monitor: str = "acc"  # resolved from config.monitor
    best: dict | None = None  # the history row of best.pt
    best_metrics: dict | None = None  # per-class precision, recall, F1 of best.pt on validation
    phase_complete: bool = False  # the current phase ended (its epochs done, or patience ran out)
    calibration: dict | None = None  # the temperature fitted on the held-out logits of best.pt
    interval: dict | None = None  # regression: best.pt's split-conformal interval (tasks.conformal)
    # (logits, targets) of best.pt's validation in this process, for the calibration (not saved)
    best_outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def best_acc(self) -> float | None:
        """best.pt's validation accuracy (-1 before there is one); None for tasks without classes."""
        if self.data.task != "classification":
            return None
        return self.best["val_acc"] if self.best else -1.0

    @property
    def best_score(self) -> dict | None:
        """best.pt's monitored validation score, by its name in metrics.csv."""
        if self.best is None:
            return None
        key = MONITORS[self.monitor][0]
        return {"name": key, "value": self.best[key]}


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save, atomically, after checking there is room for it."""
    save_torch(state, path)


def checkpoint_state(
    record: RunRecord,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler | None,
    phase_index: int,
    phase_epoch: int,
    gathered: tuple[dict, dict] | None = None,
) -> dict:
    """Everything ``last.pt`` and ``best.pt`` hold; ``gathered``: a sharded model's full (model, optimizer) state
    (:func:`~transferkit.train.parallel.sharding.gather_state`) in place of this process's shards."""
    kernels = record.kernels
    weights, optimizer_state = gathered or (model.state_dict(), optimizer.state_dict())
    return {
        "format": RUN_FORMAT,
        "config": record.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in weights.items()},
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": record.history[-1]["epoch"],
        "phase": phase_index,
        "phase_epoch": phase_epoch,
        "frozen": [n for n, p in model.named_parameters() if not p.requires_grad],
        "rng": rng_state(),
        "history": record.history,
        "best_val_acc": record.best_acc,
        "best_epoch": record.best["epoch"] if record.best else None,
        "best_metrics": record.best_metrics,
        "balance": record.balance,
        "monitor": record.monitor,
        "phase_complete": record.phase_complete,
        "class_names": record.data.class_names,
        "target_scale": asdict(record.data.target_scale) if record.data.target_scale else None,
        "preprocessing": record.data.preprocessing.to_dict(),
        "backbone": record.backbone,
        "advice": record.advice,
        "head": record.head,
        "data_fingerprint": record.data.fingerprint,
        "fast_path": kernels.training.to_dict() if kernels.training else None,
        "fast_path_inference": kernels.inference.to_dict(),
        "model_code": record.model_code,
    }


def write_metrics(path: Path, history: list[dict], task: str = "classification") -> None:
    buffer = io.StringIO(newline="")
    columns = [*_METRICS[:4], *TASK_SCORES[task], *_METRICS[4:]]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def summary(record: RunRecord, model: nn.Module, *, stopped: bool, write: bool) -> dict:
    """The run's summary, also written to ``report.json`` when ``write``."""
    config = record.config
    result = {
        "out": config.out,
        "model": config.model,
        "weights": config.weights or getattr(model, "transferkit_weights", None),  # a transformers model's own
        "backbone": record.backbone,
        "preprocessing": record.data.preprocessing.to_dict(),
        "strategy": config.strategy,
        "advice": record.advice,
        "task": record.data.task,
        "best_val_acc": record.best_acc,
        "best_score": record.best_score,
        "target_scale": asdict(record.data.target_scale) if record.data.target_scale else None,
        "target_stats": record.data.target_stats,
        "best": {"epoch": record.best["epoch"], "monitor": record.monitor, **_scores(record.best)}
        if record.best
        else None,
        "best_metrics": record.best_metrics,
        "balance": record.balance,
        "splits": record.data.splits,
        "class_counts": record.data.class_counts,
        "epochs": record.history,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "seconds": record.history[-1]["cumulative_seconds"] if record.history else 0.0,
        "skipped_images": [{"name": n, "reason": r} for n, r in record.data.skipped],
        "stopped_early": stopped,
        "load_report": record.load_report,
        "calibration": record.calibration,
        "interval": record.interval,
        "parameters": parameter_groups(model),
        "environment": environment(record.kernels),
    }
    if write:
        write_json(Path(config.out) / "report.json", result)
    return result


def parameter_groups(model: nn.Module) -> dict:
    """Which parts of the model trained in its last phase and which stayed frozen, by module path.

    Parts are the top-level modules, split one level further where they hold both (``layer4``
    trained while ``layer1`` stayed frozen): ``{"trained": {"fc": 5130}, "frozen": {...}}``.
    """
    groups: dict[str, dict[str, int]] = {"trained": {}, "frozen": {}}
    states: dict[str, set[bool]] = {}
    for name, param in model.named_parameters():
        states.setdefault(name.split(".")[0], set()).add(param.requires_grad)
    mixed = {top for top, kinds in states.items() if len(kinds) == 2}
    for name, param in model.named_parameters():
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] in mixed and len(parts) > 2 else parts[0]
        kind = "trained" if param.requires_grad else "frozen"
        groups[kind][key] = groups[kind].get(key, 0) + param.numel()
    return groups


def environment(kernels: Kernels) -> dict:
    """Library versions and the kernels the fast path chose: what a result depends on."""
    import platform

    import timm
    import torchvision

    from ... import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "transferkit": __version__,
        "kernels": {
            "training": asdict(kernels.training) if kernels.training else None,
            "inference": asdict(kernels.inference) if kernels.inference else None,
        },
    }


def _scores(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith("val_")}


def load_run(path: str | Path, *, which: str = "last") -> dict:
    """A run's checkpoint (``last`` or ``best``), read without executing any pickled code.

    The checkpoint may come from someone else: besides its pickle, its structure is checked
    (what each entry holds), so that a damaged or forged one is one clear error.
    """
    if which not in ("best", "last"):
        raise RunError(f"which must be best or last, got {which!r}.", argument="which")
    folder = Path(path)
    if not folder.exists():
        raise RunError(f"Run '{path}' does not exist. Give the output folder of a training run.")
    file = folder / f"{which}.pt" if folder.is_dir() else folder
    if not file.is_file():
        raise RunError(f"'{path}' is not a transferkit run: {file.name} is missing. Give the output folder of a run.")
    state = load_torch_file(file, refusal_hint="A transferkit run never needs that: do not use this folder.")
    if not isinstance(state, dict) or state.get("format") != RUN_FORMAT:
        raise RunError(f"'{file}' is not a transferkit run checkpoint.")
    problem = _damage(state)
    if problem:
        raise RunError(f"Run checkpoint '{file}' is damaged: {problem}. Use a complete copy of the run.")
    return state


_PREPROCESSING = {"input_size": list | tuple, "mean": list | tuple, "std": list | tuple, "interpolation": str}


def _damage(state: dict) -> str | None:
    """What is wrong with a run checkpoint's structure, or None."""
    expected = {
        "config": dict,
        "model": dict,
        "class_names": list,
        "preprocessing": dict,
        "history": list,
        "epoch": int,
        "phase": int,
        "phase_epoch": int,
        "best_val_acc": int | float | None,
    }
    for key, kind in expected.items():
        if not isinstance(state.get(key), kind):
            return f"'{key}' is missing or holds a {type(state.get(key)).__name__}"
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        return "'model' holds something other than tensors"
    names = state["class_names"]
    fewest = 2 if state["config"].get("task", "classification") == "classification" else 1
    if len(names) < fewest or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        return f"'class_names' is not a list of {fewest} or more distinct names"
    pre = state["preprocessing"]
    for key, kind in _PREPROCESSING.items():
        if not isinstance(pre.get(key), kind):
            return f"preprocessing '{key}' is missing or holds a {type(pre.get(key)).__name__}"
    sizes = list(pre["input_size"]) + list(pre["mean"]) + list(pre["std"])
    if len(pre["input_size"]) != 3 or not all(isinstance(v, int | float) and math.isfinite(v) for v in sizes):
        return "preprocessing sizes or statistics are not numbers"
    if any(s <= 0 for s in pre["std"]) or any(s < 1 for s in pre["input_size"]):
        return "preprocessing has a size below 1 or a standard deviation of 0 or less"
    try:
        Preprocessing.from_dict(pre)
    except (KeyError, TypeError, ValueError) as e:
        return f"preprocessing is not one transferkit applies ({e})"
    for key in ("fast_path", "fast_path_inference"):
        saved = state.get(key)
        if saved is not None and (not isinstance(saved, dict) or not set(saved) <= _FAST_PATH_FIELDS):
            return f"'{key}' is not a kernel choice"
    return None


def load_model_state(model: nn.Module, state: dict, run: str | Path) -> None:
    """Put a run's weights into the model its config builds; a mismatch is a :class:`RunError`."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = one_line(e, 240)
        raise RunError(f"Run '{run}': its weights do not fit the model its config builds ({first}).") from None


def run_model(state: dict, run: str | Path, *, model: nn.Module | None = None) -> nn.Module:
    """The network of a run's checkpoint ``state``, with its weights: MODEL built anew as training built it (the
    distillation head tied, a lora or dora run's adapters attached), or ``model`` when given (a module trained
    from Python, which no name rebuilds). A run whose MODEL is code is checked by :func:`check_model_code` first."""
    config = TrainConfig.from_dict(state["config"])
    if model is None:
        model = create_model(
            config.model, num_classes=len(state["class_names"]), in_chans=config.in_chans, image_size=config.image_size
        )
        tie_distillation_head(model)  # as build_model did
    if peft_model_of(model) is None:
        attach_adapters(model, config)  # a lora or dora run's weights include its adapters
    load_model_state(model, state, run)
    return model


def check_model_code(state: dict, run: str | Path, *, trust_code: bool, same_code: bool = False) -> list[str]:
    """Refuse a run whose model is built by the user's code unless ``trust_code``; return notes.

    A run folder may come from someone else: importing the file its config names would run
    whatever is in it. With ``trust_code``, a file that changed since the run was trained is
    a note, or an error when ``same_code`` (resuming on other code would not continue the run).
    """
    spec = state["config"]["model"]
    if not is_code_spec(spec):
        return []
    recorded = state.get("model_code") or {}
    where = recorded.get("file") or code_origin(spec)["file"]  # found without importing anything
    if not trust_code:
        raise RunError(
            f"Run '{run}' builds its model by running code from '{where}' (MODEL {spec}). "
            "Read that file, then pass trust_code only if you trust it.",
            argument="trust_code",
        )
    now = code_origin(spec)
    if not recorded.get("sha256") or now is None or now["sha256"] == recorded["sha256"]:
        return []
    change = (
        f"'{now['file']}' changed since the run was trained "
        f"(sha256 {recorded['sha256'][:12]} then, {str(now['sha256'])[:12]} now)"
    )
    if same_code:
        raise RunError(f"Cannot resume '{run}': {change}. Restore that file or start a new run.")
    return [f"{change}; the weights may not fit it."]
