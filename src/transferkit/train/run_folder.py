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
import os
import shutil
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .._text import one_line
from ..data.sources import DataSource
from ..errors import RunError
from ..model.factory import code_origin, is_code_spec
from ..serialization import save_torch, write_json, write_text
from ..weights.checkpoint import load_torch_file
from .config import TrainConfig
from .fastpath import FastPath
from .rng import rng_state
from .setup import Kernels, PreparedData

__all__ = [
    "RUN_FORMAT",
    "RunLock",
    "RunRecord",
    "check_model_code",
    "check_out",
    "claim_out",
    "check_same_data",
    "checkpoint_state",
    "clear_run",
    "load_model_state",
    "load_run",
    "remove_leftovers",
    "resumed_config",
    "save_checkpoint",
    "summary",
    "write_metrics",
]

RUN_FORMAT = "transferkit-run/1"
_FAST_PATH_FIELDS = {f.name for f in dataclasses.fields(FastPath)}
_METRICS = [
    "epoch",
    "phase",
    "train_loss",
    "val_loss",
    "val_acc",
    "val_balanced_acc",
    "val_macro_f1",
    "lr",
    "seconds",
    "cumulative_seconds",
    "cached",
]


@dataclass
class RunRecord:
    """What a run has done so far: the rows of ``metrics.csv`` and the best validation accuracy."""

    config: TrainConfig
    data: PreparedData
    kernels: Kernels
    head: str
    load_report: dict | None = None
    history: list[dict] = field(default_factory=list)
    model_code: dict | None = None  # the user's file that builds the model, with its hash
    balance: str = "none"  # resolved from config.balance ("auto" decided by the data)
    monitor: str = "acc"  # resolved from config.monitor
    best: dict | None = None  # the history row of best.pt
    best_metrics: dict | None = None  # per-class precision, recall, F1 of best.pt on validation
    phase_complete: bool = False  # the current phase ended (its epochs done, or patience ran out)
    calibration: dict | None = None  # the temperature fitted on the held-out logits of best.pt
    # (logits, targets) of best.pt's validation in this process, for the calibration (not saved)
    best_outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def best_acc(self) -> float:
        return self.best["val_acc"] if self.best else -1.0


# What a run writes; with overwrite these are removed first, so that two runs never mix.
RUN_FILES = (
    "config.json",
    "last.pt",
    "best.pt",
    "metrics.csv",
    "report.json",
    "lr_find.png",
    "report.html",
    "curves.png",
    "confusion.png",
    "reliability.png",
    "calibration.json",
    "MODEL_CARD.md",
    *(f"model{kind}{ext}" for kind in ("", ".int8") for ext in (".onnx", ".onnx.json")),
    *(f"model{ext}" for ext in (".pt2", ".pt2.json", ".safetensors", ".safetensors.json")),
)
LOCK_FILE = ".transferkit.lock"


def check_out(out: Path, *, resume: bool, overwrite: bool = False) -> None:
    """``out`` is a folder, or may become one, that holds no other run and no one else's files.

    Nothing is created here: a run that fails before training (a bad MODEL, unreadable DATA)
    leaves no folder behind. :func:`claim_out` creates it.

    Args:
        resume: ``out`` is the run being continued.
        overwrite: replace a finished run in ``out``, or write into a folder holding other files.
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"Output '{out}' is a file; give a folder for the run.")
    if not resume and out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in (*RUN_FILES, LOCK_FILE, "tensorboard", "cache"))
        if (out / "last.pt").exists() and not overwrite:
            raise RunError(
                f"'{out}' already holds a run; resume it, choose another output folder, "
                "or pass overwrite to replace it.",
                argument="overwrite",
            )
        if others and not (out / "config.json").exists() and not overwrite:
            shown = ", ".join(_shown(n) for n in others[:3]) + (" ..." if len(others) > 3 else "")
            raise RunError(
                f"'{out}' is not empty and is not a run folder ({shown}); "
                "choose an empty or new folder, or pass overwrite to write into it.",
                argument="overwrite",
            )
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if not out.exists() and parent is not None and not parent.is_dir():
        raise RunError(f"Cannot write to output folder '{out}': '{parent}' is a file. Choose a writable folder.")


def claim_out(out: Path) -> RunLock:
    """Create ``out`` when missing, check that it is writable and take its lock."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunError(f"Cannot write to output folder '{out}': {e.strerror}. Choose a writable folder.") from None
    return RunLock(out).acquire()


class RunLock:
    """A lock file holding the PID of the process that writes a run folder.

    A second run on the same folder is refused while that process lives; a lock left by a
    process that died (killed, machine restarted) is stale and taken over.
    """

    def __init__(self, out: Path):
        self.path = out / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    pid, host = holder
                    raise RunError(
                        f"'{self.path.parent}' is in use by another run (process {pid} on {host}); wait for it "
                        f"to finish or choose another output folder. If no such run exists, delete '{self.path}'."
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            return self
        raise RunError(f"Cannot take the lock '{self.path}'; another process keeps creating it.")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _holder(self) -> tuple[int, str] | None:
        """The live (pid, host) holding the lock, or None when the lock is stale."""
        try:
            pid_text, _, host = self.path.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None  # unreadable or half-written by a process killed while writing it
        if host and host != socket.gethostname():
            return pid, host  # another machine's process cannot be checked: assume it lives
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return pid, host or socket.gethostname()


def remove_leftovers(out: Path) -> list[str]:
    """Delete temporary files that a killed write left (``.last.pt.XXXX.tmp``); call while holding the lock."""
    removed = []
    for name in RUN_FILES:
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def clear_run(out: Path) -> None:
    """Remove a previous run's files before another run is written in their place."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)


def _shown(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


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
        "best_epoch": record.best["epoch"] if record.best else None,
        "best_metrics": record.best_metrics,
        "balance": record.balance,
        "monitor": record.monitor,
        "phase_complete": record.phase_complete,
        "class_names": record.data.class_names,
        "preprocessing": asdict(record.data.preprocessing),
        "head": record.head,
        "data_fingerprint": record.data.fingerprint,
        "fast_path": kernels.training.to_dict() if kernels.training else None,
        "fast_path_inference": kernels.inference.to_dict(),
        "model_code": record.model_code,
    }


def write_metrics(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=_METRICS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def summary(record: RunRecord, model: nn.Module, *, stopped: bool, write: bool) -> dict:
    """The run's summary, also written to ``report.json`` when ``write``."""
    config = record.config
    result = {
        "out": config.out,
        "model": config.model,
        "weights": config.weights,
        "strategy": config.strategy,
        "best_val_acc": record.best_acc,
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

    from .. import __version__

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
    return {k: row[k] for k in ("val_acc", "val_balanced_acc", "val_macro_f1", "val_loss") if k in row}


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
        "best_val_acc": int | float,
    }
    for key, kind in expected.items():
        if not isinstance(state.get(key), kind):
            return f"'{key}' is missing or holds a {type(state.get(key)).__name__}"
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        return "'model' holds something other than tensors"
    names = state["class_names"]
    if len(names) < 2 or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        return "'class_names' is not a list of two or more distinct names"
    pre = state["preprocessing"]
    for key, kind in _PREPROCESSING.items():
        if not isinstance(pre.get(key), kind):
            return f"preprocessing '{key}' is missing or holds a {type(pre.get(key)).__name__}"
    sizes = list(pre["input_size"]) + list(pre["mean"]) + list(pre["std"])
    if len(pre["input_size"]) != 3 or not all(isinstance(v, int | float) and math.isfinite(v) for v in sizes):
        return "preprocessing sizes or statistics are not numbers"
    if any(s <= 0 for s in pre["std"]) or any(s < 1 for s in pre["input_size"]):
        return "preprocessing has a size below 1 or a standard deviation of 0 or less"
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


# Settings a resumed run may change: they do not change what the finished epochs computed.
RESUME_SAFE = ("device", "epochs", "strict_data", "reprobe")


def resumed_config(state: dict, folder: str | Path, changes: dict | None = None) -> TrainConfig:
    """The configuration that continues the run in ``folder`` (where it is now, not where it was made).

    ``changes`` are settings given again on resuming. Those equal to the run's are accepted;
    a different device or a longer ``epochs`` (the last phase's schedule is stretched) are
    applied; any other difference is refused, naming the settings, since it would change the result.
    """
    stored = dict(state["config"])
    stored["out"] = str(folder)
    changes = {k: v for k, v in (changes or {}).items() if k != "out" or Path(v).resolve() != Path(folder).resolve()}
    if "out" in changes:
        raise RunError(
            f"A resumed run stays in its folder '{folder}'; out cannot move it. Copy the folder, then resume the copy.",
            argument="out",
        )
    before = TrainConfig.from_dict(stored)
    stored = before.to_dict()  # a run saved before a setting existed has its default
    different = sorted(k for k, v in changes.items() if v != stored[k])
    refused = [k for k in different if k not in RESUME_SAFE]
    if refused:
        shown = ", ".join(f"{k} ({stored.get(k)!r} in the run, {changes[k]!r} given)" for k in refused)
        raise RunError(
            f"Cannot resume '{folder}' with other settings that change the result: {shown}. "
            f"Drop them to continue the run as it was, or start a new run. Only {', '.join(RESUME_SAFE)} may change.",
            argument=(*refused, *RESUME_SAFE),
        )
    config = TrainConfig.from_dict({**stored, **{k: changes[k] for k in different}})
    if config.epochs < before.epochs:
        raise RunError(
            f"epochs can only grow on resuming '{folder}': the run has {before.epochs}, got {config.epochs}.",
            argument="epochs",
        )
    if config.epochs != before.epochs:
        done, now = before.phases(), config.phases()
        current = state["phase"]
        if [(p.name, p.epochs) for p in done[:current]] != [(p.name, p.epochs) for p in now[:current]] or len(
            done
        ) != len(now):
            raise RunError(
                f"epochs {config.epochs} would split the strategy's phases differently from the {before.epochs} "
                f"'{folder}' ran with; start a new run with that many epochs.",
                argument="epochs",
            )
    return config


def check_same_data(state: dict, source: DataSource, spec: str) -> None:
    """Refuse to resume on DATA whose classes or files changed since the run started."""
    before, now = list(state["class_names"]), source.class_names
    if before != now:
        added = [c for c in now if c not in before]
        gone = [c for c in before if c not in now]
        what = "; ".join(
            part
            for part in (
                f"new classes {', '.join(added)}" if added else "",
                f"classes gone {', '.join(gone)}" if gone else "",
                "classes in another order" if not added and not gone else "",
            )
            if part
        )
        raise RunError(
            f"Cannot resume: the classes of '{spec}' changed since the run started ({what}). Start a new run."
        )
    if state.get("data_fingerprint") and state["data_fingerprint"] != source.fingerprint():
        raise RunError(
            f"Cannot resume: the images of '{spec}' changed since the run started (files added, removed or "
            "modified). Restore them or start a new run."
        )
