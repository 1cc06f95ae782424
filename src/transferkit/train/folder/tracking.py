"""Where a run's epochs are recorded besides ``metrics.csv``: TensorBoard always, MLflow with ``--track mlflow``.

MLflow gets the whole :class:`~transferkit.train.config.TrainConfig` as parameters, each epoch's
metrics (step: the run's epoch), and at the end the model card, ``report.html``, ``report.json``
and ``metrics.csv`` as artifacts; ``transferkit export`` adds its files to the same MLflow run.
The store is ``--tracking-uri`` (a server, ``http://HOST:PORT``), else ``MLFLOW_TRACKING_URI``,
else an SQLite store in the run folder (``mlflow.db``, artifacts in ``mlartifacts/``; open it with
``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``).

A tracking server that cannot be reached when the run starts is an error before anything is
written. One that goes away during the run is a warning: MLflow stops receiving, the run goes
on, and the run folder is complete. The MLflow run's id is kept in ``mlflow.json``, so that a
resumed run continues it when resumed with the same store; the store itself is never taken from
a run folder, which may come from someone else.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ..._text import first_line
from ...errors import ConfigError
from ...serialization import write_json
from ..config import TRACKERS

__all__ = ["MLFLOW_FILE", "MlflowRun", "Trackers", "add_files", "check_store", "check_tracker", "start_trackers"]

MLFLOW_FILE = "mlflow.json"  # the MLflow run this run folder records to
ARTIFACTS = ("MODEL_CARD.md", "report.html", "report.json", "metrics.csv", "config.json")
# Per request: MLflow's own defaults retry a lost server for minutes, with a growing backoff
RETRIES, TIMEOUT_S, BACKOFF = 2, 10, 1


def local_store(out: Path) -> str:
    return f"sqlite:///{out.resolve() / 'mlflow.db'}"


def store_uri(tracking_uri: str | None, out: Path) -> str:
    """Where run ``out``'s MLflow records go: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else its folder."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_store(out)


def _client(uri: str):
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError("track mlflow needs MLflow: pip install 'transferkit[track]'.", argument="track") from None
    return MlflowClient(tracking_uri=uri)


def _unusable(uri: str, error: Exception) -> ConfigError:
    return ConfigError(
        f"MLflow tracking store {_without_password(uri)} cannot be used: {_first_line(error)}. Start the server, or "
        "give another --tracking-uri (without it, the run keeps its own store in its folder).",
        argument="tracking_uri",
    )


def check_tracker(track: str) -> None:
    """A command's ``track`` names a tracker transferkit records to."""
    if track not in TRACKERS:
        raise ConfigError(f"track must be one of {', '.join(TRACKERS)}, got {track!r}.", argument="track")


def check_store(config, out: Path) -> None:
    """Before anything is written: MLflow is installed and the tracking server answers (a store in the run
    folder is made with the run)."""
    if config.track != "mlflow":
        return
    uri = store_uri(config.tracking_uri, out)
    client = _client(uri)
    if uri == local_store(out):
        return
    try:
        with _patient(retries=0, timeout=5):
            client.search_experiments(max_results=1)
    except Exception as e:  # MLflow raises MlflowException, requests' and SQLAlchemy's errors: say which
        raise _unusable(uri, e) from None


@contextmanager
def _patient(retries: int = RETRIES, timeout: int = TIMEOUT_S):
    """MLflow's HTTP requests with few retries and a short timeout, unless the user set their own; nothing printed."""
    names = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": retries,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": timeout,
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": BACKOFF,
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # stdout is the command's (--json); the log says where
    }
    set_here = [name for name in names if name not in os.environ]
    for name in set_here:
        os.environ[name] = str(names[name])
    try:
        yield
    finally:
        for name in set_here:
            os.environ.pop(name, None)


class MlflowRun:
    """One MLflow run that a transferkit run records to, through MLflow's client."""

    def __init__(self, client, run_id: str, uri: str, log: Callable[[str], None]):
        self.client, self.run_id, self.uri, self.log = client, run_id, uri, log
        self.lost: str | None = None  # why MLflow stopped receiving

    @classmethod
    def start(cls, config, out: Path, *, log: Callable[[str], None]) -> MlflowRun:
        """Open (or, for a resumed run with the same store, reopen) the run's MLflow run.

        Raises ConfigError, one line, when MLflow is not installed or the store cannot be reached.
        """
        from mlflow.entities import Param

        uri = store_uri(config.tracking_uri, out)
        shown = _without_password(uri)
        try:
            with _patient(retries=0, timeout=5):
                client = _client(uri)
                previous = _previous_run(client, out, uri)
                if previous is not None:
                    client.update_run(previous, status="RUNNING")
                    run = cls(client, previous, uri, log)
                    log(f"mlflow: continuing run {previous} at {shown}")
                    return run
                experiment = client.get_experiment_by_name(config.mlflow_experiment)
                if experiment is None:
                    local = uri == local_store(out)  # artifacts beside the store, not in the working folder
                    location = (out.resolve() / "mlartifacts").as_uri() if local else None
                    experiment_id = client.create_experiment(config.mlflow_experiment, artifact_location=location)
                else:
                    experiment_id = experiment.experiment_id
                tags = {"transferkit.run_folder": str(out.resolve()), "mlflow.source.name": "transferkit"}
                created = client.create_run(experiment_id, run_name=out.resolve().name, tags=tags)
                run_id = created.info.run_id
                params = [Param(k, v) for k, v in _params(config.to_dict()).items()]
                for first in range(0, len(params), 100):  # MLflow takes at most 100 parameters a request
                    client.log_batch(run_id, params=params[first : first + 100])
        except Exception as e:
            raise _unusable(uri, e) from None
        write_json(out / MLFLOW_FILE, {"tracking_uri": shown, "run_id": run_id, "experiment_id": experiment_id})
        page = f" ({shown.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})" if uri.startswith("http") else ""
        log(f"mlflow: run {run_id} in experiment '{config.mlflow_experiment}' at {shown}{page}")
        return cls(client, run_id, uri, log)

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        """One request to MLflow; the first failure is a warning, and later ones are not tried."""
        if self.lost is not None:
            return
        try:
            with _patient():
                fn(*args, **kwargs)
        except Exception as e:  # the server went away, a disk filled: the run goes on without MLflow
            self.lost = _first_line(e)
            self.log(
                f"warning: mlflow: {what} failed ({self.lost}); MLflow receives nothing more from this run, "
                "whose folder stays complete"
            )

    def epoch(self, row: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in row.items() if _is_metric(k, v)]
        self._call(f"logging epoch {step}", self.client.log_batch, self.run_id, metrics=metrics)

    def artifacts(self, paths: list[Path], folder: str | None = None) -> None:
        """Upload files, and folders whole (as ``folder/NAME``)."""
        for path in paths:
            if path.is_file():
                self._call(f"uploading {path.name}", self.client.log_artifact, self.run_id, str(path), folder)
            elif path.is_dir():
                into = "/".join(filter(None, [folder, path.name]))
                self._call(f"uploading {path.name}", self.client.log_artifacts, self.run_id, str(path), into)

    def end(self, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED."""
        self._call("ending the run", self.client.set_terminated, self.run_id, status)


def add_files(
    run: Path, paths: list[Path], *, folder: str, tracking_uri: str | None, log: Callable[[str], None]
) -> str | None:
    """Add files made from a run (its exports, a report) to the MLflow run it recorded to, in the store the
    command names (``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the run folder's own). Returns that
    MLflow run's id; None, with a warning, when the store holds no MLflow run of this folder."""
    uri = store_uri(tracking_uri, run)
    try:
        with _patient(retries=0, timeout=5):
            client = _client(uri)
            run_id = _previous_run(client, run, uri)
    except ConfigError:
        raise
    except Exception as e:
        raise _unusable(uri, e) from None
    if run_id is None:
        log(
            f"warning: mlflow: {_without_password(uri)} holds no MLflow run of '{run}' (trained without --track "
            "mlflow, or recorded elsewhere: give that --tracking-uri); nothing recorded"
        )
        return None
    tracked = MlflowRun(client, run_id, uri, log)
    tracked.artifacts(paths, folder)
    if tracked.lost is None:
        log(f"mlflow: {', '.join(p.name for p in paths)} added to run {run_id} ({folder}/)")
    return run_id


def _previous_run(client, out: Path, uri: str) -> str | None:
    """The MLflow run a resumed run folder recorded to, when it is in this store and still exists."""
    try:
        stored = json.loads((out / MLFLOW_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("tracking_uri") != _without_password(uri):
        return None
    try:
        return client.get_run(str(stored.get("run_id"))).info.run_id
    except Exception:  # deleted, or never in this store: a new run
        return None


def _params(config: dict) -> dict[str, str]:
    """The configuration as MLflow parameters: text of at most 6,000 characters (MLflow's limit)."""
    out = {}
    for key, value in config.items():
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else "" if value is None else str(value)
        out[key] = text[:6000]
    return out


def _is_metric(key: str, value) -> bool:
    return key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)


# What a failed request's long message comes down to, as requests and urllib3 word it
_REASONS = {
    "Connection refused": "connection refused",
    "timed out": "timed out",
    "Name or service not known": "host not found",
    "Temporary failure in name resolution": "host not found",
    "Connection reset": "connection reset",
    "Remote end closed connection": "connection closed by the server",
}


def _first_line(error: Exception) -> str:
    text = str(error)
    found = next((reason for words, reason in _REASONS.items() if words in text), None)
    return found or first_line(error)


def _without_password(uri: str) -> str:
    """The URI as it may be shown and stored: a password in it is replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Trackers:
    """The run's recorders besides ``metrics.csv``, on the main process: TensorBoard, and MLflow when asked."""

    def __init__(self, tensorboard, mlflow: MlflowRun | None):
        self.tensorboard, self.mlflow = tensorboard, mlflow

    def epoch(self, row: dict, step: int) -> None:
        if self.tensorboard is not None:
            for key, value in row.items():
                if key in ("train_loss", "lr") or key.startswith("val_"):
                    self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.mlflow is not None:
            self.mlflow.epoch(row, step)

    def finished(self, out: Path) -> None:
        """The run's files for people to read, once it has written them."""
        if self.mlflow is not None:
            self.mlflow.artifacts([out / name for name in ARTIFACTS])

    def close(self, status: str = "FINISHED") -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            self.mlflow.end(status)


def start_trackers(config, out: Path, *, main: bool, log: Callable[[str], None]) -> Trackers:
    """TensorBoard, and the run's MLflow run when ``config.track`` asks for it (only the main process records)."""
    if not main:
        return Trackers(None, None)
    mlflow = MlflowRun.start(config, out, log=log) if config.track == "mlflow" else None
    return Trackers(_tensorboard(out, log), mlflow)


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
