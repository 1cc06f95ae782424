"""A run folder's files: ``last.pt`` and ``best.pt``, ``metrics.csv``, ``report.json``, ``config.json``.

A checkpoint holds everything needed to continue exactly or to use the model alone: model,
optimizer, scheduler and loss-scaler state, epoch and phase, RNG state, frozen parameters,
configuration, preprocessing, class names and the kernels measured fastest. Every file is
written atomically; checkpoints are read without running pickled code.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import RunError
from ..serialization import atomic_path, write_json
from .config import TrainConfig
from .rng import rng_state
from .setup import Kernels, PreparedData

__all__ = [
    "RUN_FORMAT",
    "RunRecord",
    "check_out",
    "checkpoint_state",
    "load_run",
    "save_checkpoint",
    "summary",
    "write_metrics",
]

RUN_FORMAT = "transferkit-run/1"
_METRICS = ["epoch", "phase", "train_loss", "val_loss", "val_acc", "lr", "seconds", "cumulative_seconds", "cached"]


@dataclass
class RunRecord:
    """What a run has done so far: the rows of ``metrics.csv`` and the best validation accuracy."""

    config: TrainConfig
    data: PreparedData
    kernels: Kernels
    head: str
    load_report: dict | None = None
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0


def check_out(out: Path, *, resume: bool) -> None:
    """``out`` is a writable folder that holds no other run (created when missing)."""
    if out.exists() and not out.is_dir():
        raise RunError(f"Output '{out}' is a file; give a folder for the run.")
    if not resume and (out / "last.pt").exists():
        raise RunError(f"'{out}' already holds a run; resume it or choose another output folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunError(f"Cannot write to output folder '{out}': {e.strerror}. Choose a writable folder.") from None


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save, atomically: write beside, then rename."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def checkpoint_state(
    record: RunRecord,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler | None,
    phase_index: int,
    phase_epoch: int,
) -> dict:
    kernels = record.kernels
    return {
        "format": RUN_FORMAT,
        "config": record.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": record.history[-1]["epoch"],
        "phase": phase_index,
        "phase_epoch": phase_epoch,
        "frozen": [n for n, p in model.named_parameters() if not p.requires_grad],
        "rng": rng_state(),
        "history": record.history,
        "best_val_acc": record.best_acc,
        "class_names": record.data.class_names,
        "preprocessing": asdict(record.data.preprocessing),
        "head": record.head,
        "data_fingerprint": record.data.fingerprint,
        "fast_path": kernels.training.to_dict() if kernels.training else None,
        "fast_path_inference": kernels.inference.to_dict(),
    }


def write_metrics(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_METRICS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def summary(record: RunRecord, model: nn.Module, *, stopped: bool, write: bool) -> dict:
    """The run's summary, also written to ``report.json`` when ``write``."""
    config = record.config
    result = {
        "out": config.out,
        "model": config.model,
        "weights": config.weights,
        "strategy": config.strategy,
        "best_val_acc": record.best_acc,
        "epochs": record.history,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "seconds": record.history[-1]["cumulative_seconds"] if record.history else 0.0,
        "skipped_images": [{"name": n, "reason": r} for n, r in record.data.skipped],
        "stopped_early": stopped,
        "load_report": record.load_report,
    }
    if write:
        write_json(Path(config.out) / "report.json", result)
    return result


def load_run(path: str | Path, *, which: str = "last") -> dict:
    """A run's checkpoint (``last`` or ``best``), read without executing any pickled code."""
    folder = Path(path)
    file = folder / f"{which}.pt" if folder.is_dir() else folder
    if not file.is_file():
        raise RunError(f"'{path}' is not a transferkit run: {file.name} is missing. Give the output folder of a run.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"Run checkpoint '{file}' cannot be read: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(state, dict) or state.get("format") != RUN_FORMAT:
        raise RunError(f"'{file}' is not a transferkit run checkpoint.")
    return state
