"""A run's output folder: checked before anything is written, claimed with a lock, cleared of another run's files.

A folder that holds someone else's files, or a run that is not being resumed, is refused; a
second process writing the same folder is refused while the first lives.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from ...errors import RunError
from .run_log import LOG_FILE

__all__ = [
    "LOCK_FILE",
    "EXPORT_FILES",
    "REPORT_FILES",
    "RUN_FILES",
    "RunLock",
    "check_out",
    "claim_out",
    "is_run_folder",
    "clear_run",
    "remove_leftovers",
]

# What eval --report writes from best.pt, and the exports of best.pt into the run folder.
REPORT_FILES = ("report.html", "curves.png", "confusion.png", "reliability.png")
EXPORT_FILES = (
    *(f"model{kind}.onnx" for kind in ("", ".int8")),
    "model.pt2",
    "model.safetensors",
    "timm-hub",  # folders
    "transformers",
)
# What a run writes; with overwrite these are removed first, so that two runs never mix.
RUN_FILES = (
    "config.json",
    "mlflow.json",
    "mlflow.db",
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
    "advice.json",
    "probe_depth.png",
    LOG_FILE,
    *(f"model{kind}{ext}" for kind in ("", ".int8") for ext in (".onnx", ".onnx.json")),
    *(f"model{ext}" for ext in (".pt2", ".pt2.json", ".safetensors", ".safetensors.json")),
)
LOCK_FILE = ".transferkit.lock"
# Settings that every run's config.json has held; a JSON object without them is not a run's.
_RUN_KEYS = frozenset({"model", "data", "out", "strategy", "epochs", "batch_size", "seed"})
_CONFIG_LIMIT = 1 << 20


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
        run = is_run_folder(out)
        if run and (out / "last.pt").exists() and not overwrite:
            raise RunError(
                f"'{out}' already holds a run; resume it, choose another output folder, "
                "or pass overwrite to replace it.",
                argument="overwrite",
            )
        others = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
        if not run and others and not overwrite:
            shown = ", ".join(_shown(n) for n in others[:3]) + (" ..." if len(others) > 3 else "")
            raise RunError(
                f"'{out}' is not empty and is not a run folder ({shown}); "
                "choose an empty or new folder, or pass overwrite to write into it.",
                argument="overwrite",
            )
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if not out.exists() and parent is not None and not parent.is_dir():
        raise RunError(f"Cannot write to output folder '{out}': '{parent}' is a file. Choose a writable folder.")


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` holds a run's ``config.json``: a JSON object with the settings every run writes.

    A file of the same name that is someone else's (another tool's configuration) does not make
    a folder a run, so its files are never taken for a run's and replaced.
    """
    path = out / "config.json"
    try:
        if path.stat().st_size > _CONFIG_LIMIT:
            return False
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(values, dict) and _RUN_KEYS <= values.keys()


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
    shutil.rmtree(out / "mlartifacts", ignore_errors=True)
    shutil.rmtree(out / "race", ignore_errors=True)  # strategy auto's race, where it was interrupted


def _shown(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")
