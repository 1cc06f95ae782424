"""Continuing a run: the settings that may change on resuming, and the data that may not."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..data.items import DataSource
from ..errors import RunError
from .config import TrainConfig

if TYPE_CHECKING:
    from .setup import PreparedData

__all__ = ["RESUME_SAFE", "check_same_data", "resumed_config"]

# Where a run is recorded besides its folder: given again on resuming, not read from the folder.
TRACKING = ("track", "tracking_uri", "mlflow_experiment")
# Settings a resumed run may change: they do not change what the finished epochs computed.
RESUME_SAFE = ("device", "epochs", "strict_data", "reprobe", "shard_params", *TRACKING)


def resumed_config(state: dict, folder: str | Path, changes: dict | None = None) -> TrainConfig:
    """The configuration that continues the run in ``folder`` (where it is now, not where it was made).

    ``changes`` are settings given again on resuming. Those equal to the run's are accepted;
    a different device or a longer ``epochs`` (the last phase's schedule is stretched) are
    applied; any other difference is refused, naming the settings, since it would change the result.
    """
    stored = dict(state["config"])
    stored["out"] = str(folder)
    for name in TRACKING:  # where records are sent is the command's to say, never a run folder's
        stored[name] = TrainConfig.__dataclass_fields__[name].default
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


def check_same_data(state: dict, source: DataSource | PreparedData, spec: str) -> None:
    """Refuse to resume on DATA (or a Dataset's data, prepared) whose classes or files changed since the run started."""
    before, now = list(state["class_names"]), source.class_names
    fingerprint = source.fingerprint if isinstance(source.fingerprint, str) else source.fingerprint()
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
    if state.get("data_fingerprint") and state["data_fingerprint"] != fingerprint:
        raise RunError(
            f"Cannot resume: the images of '{spec}' changed since the run started (files added, removed or "
            "modified). Restore them or start a new run."
        )
