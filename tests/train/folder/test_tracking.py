"""--track mlflow: a store in the run folder, and a real ``mlflow server`` on 127.0.0.1, read back through
MLflow's own client; a server that is not there at the start, or goes away mid-run."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import fields

import pytest

from tests.helpers import make_image_folder, tiny_config
from transferkit.errors import ConfigError
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit

mlflow = pytest.importorskip("mlflow")


def _run_of(folder):
    from mlflow import MlflowClient

    stored = json.loads((folder / "mlflow.json").read_text())
    client = MlflowClient(stored["tracking_uri"])
    return client, client.get_run(stored["run_id"])


def _steps(client, run_id, key="val_acc"):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_local_store_resume_and_export(tmp_path, cli):
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=10)
    out = tmp_path / "run"
    fit(tiny_config(data, out, track="mlflow", strategy="full", epochs=3), stop_after=1, log=lambda m: None)
    client, run = _run_of(out)
    assert run.info.status == "KILLED"  # stopped after epoch 1, to be resumed
    assert (out / "mlflow.db").is_file() and json.loads((out / "mlflow.json").read_text())["tracking_uri"].startswith(
        "sqlite:///"
    )
    assert set(run.data.params) == {f.name for f in fields(TrainConfig)}  # the whole configuration
    assert run.data.params["out"] == str(out) and run.data.params["track"] == "mlflow"

    # resumed without --track: nothing sent, the folder's MLflow run is left as it was
    fit(resume=out, stop_after=2, trust_code=True, log=lambda m: None)
    assert [s for s, _ in _steps(client, run.info.run_id)] == [1]
    logged = []
    fit(
        resume=out, changes={"track": "mlflow"}, trust_code=True, log=logged.append
    )  # the same store: the same MLflow run
    assert any(f"continuing run {run.info.run_id}" in line for line in logged)
    run = client.get_run(run.info.run_id)
    with open(out / "metrics.csv") as f:
        history = [float(row["val_acc"]) for row in csv.DictReader(f)]
    assert [s for s, _ in _steps(client, run.info.run_id)] == [1, 3]  # epoch 2 ran untracked
    assert [v for _, v in _steps(client, run.info.run_id)] == [history[0], history[2]]
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"MODEL_CARD.md", "report.json", "metrics.csv", "config.json"} <= artifacts
    assert (out / "mlartifacts").is_dir() and not (tmp_path / "mlartifacts").exists()  # kept in the run folder

    code, _, err = cli("export", out, "--format", "safetensors", "--trust-code", "--track", "mlflow")
    assert code == 0, err
    exported = {a.path for a in client.list_artifacts(run.info.run_id, "exports")}
    assert exported == {"exports/model.safetensors", "exports/model.safetensors.json"}
    code, _, err = cli("eval", out, "--trust-code", "--track", "mlflow")
    assert code == 0, err
    assert {a.path for a in client.list_artifacts(run.info.run_id, "reports")} == {"reports/report.html"}


def test_a_run_folder_never_names_the_store(tmp_path):
    """The tracking settings of a run folder (which may come from someone else) are not used on resuming."""
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=6)
    out = tmp_path / "run"
    fit(tiny_config(data, out, strategy="full", epochs=2), stop_after=1, log=lambda m: None)
    import torch

    for name in ("last.pt", "best.pt"):
        state = torch.load(out / name, weights_only=True)
        state["config"].update(track="mlflow", tracking_uri="http://127.0.0.1:9")
        torch.save(state, out / name)
    logged = []
    fit(resume=out, trust_code=True, log=logged.append)
    assert not any("mlflow" in line for line in logged) and not (out / "mlflow.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_one_line_and_writes_nothing(tmp_path, cli):
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=6)
    with pytest.raises(ConfigError, match="cannot be used: connection refused. Start the server"):
        fit(tiny_config(data, tmp_path / "run", track="mlflow", tracking_uri=f"http://127.0.0.1:{_free_port()}"))
    assert not (tmp_path / "run").exists()
    code, out, err = cli("train", "tests.helpers:TinyNet", "--data", data, "--out", tmp_path / "run", "--track", "x")
    assert code == 2 and "track must be one of none, mlflow" in err and not (tmp_path / "run").exists()


@pytest.fixture(scope="module", autouse=True)
def starting_server(tmp_path_factory):
    """``mlflow server`` as users start it, on 127.0.0.1, with its own store and artifact folder: started with the
    module, so that its start (seconds of imports) overlaps the tests before the ones that use it."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'store.db'}", "--artifacts-destination", str(root / "art")]
    with open(root / "log.txt", "wb") as log:
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
    process.url, process.log = f"http://127.0.0.1:{port}", root / "log.txt"
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def server(starting_server):
    """The module's server, once it answers."""
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{starting_server.url}/health", timeout=2)
            return starting_server
        except OSError:
            if starting_server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(starting_server.log.read_text()[-2000:]) from None
            time.sleep(0.25)


def test_run_recorded_on_a_server(server, tmp_path, cli):
    from mlflow import MlflowClient

    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=10)
    out = tmp_path / "run"
    code, stdout, err = cli(
        "train", "tests.helpers:TinyNet", "--data", data, "--out", out, "--epochs", "2", "--image-size", "16",
        "--precision", "fp32", "--no-channels-last", "--strategy", "full",
        "--track", "mlflow", "--tracking-uri", server.url, "--mlflow-experiment", "pets", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["best_val_acc"] >= 0  # MLflow printed nothing into the command's output
    client = MlflowClient(server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("pets").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.tags["transferkit.run_folder"] == str(out.resolve())
    assert run.data.params["model"] == "tests.helpers:TinyNet" and run.data.params["epochs"] == "2"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")] == [
        (int(row["epoch"]), float(row["train_loss"])) for row in rows
    ]
    card = client.download_artifacts(run.info.run_id, "MODEL_CARD.md", str(tmp_path))
    assert open(card).read() == (out / "MODEL_CARD.md").read_text()
    assert not (out / "mlflow.db").exists()  # the server keeps the records


def test_server_lost_mid_run_is_a_warning(server, tmp_path):
    """Last in this module: it stops the server."""
    data = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=10)
    out = tmp_path / "run"
    logged = []

    def log(line):
        logged.append(line)
        if line.startswith("epoch 2/"):  # epoch 1 was recorded: the server goes away
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    started = time.monotonic()
    fit(tiny_config(data, out, strategy="full", epochs=3, track="mlflow", tracking_uri=server.url), log=log)
    warnings = [line for line in logged if line.startswith("warning: mlflow")]
    assert len(warnings) == 1 and "logging epoch 2 failed (connection refused)" in warnings[0], warnings
    assert "folder stays complete" in warnings[0]
    assert (out / "best.pt").is_file() and (out / "MODEL_CARD.md").is_file()
    assert len((out / "metrics.csv").read_text().splitlines()) == 4
    assert time.monotonic() - started < 60  # the lost server is not retried for minutes
