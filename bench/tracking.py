"""What ``--track mlflow`` costs a run: epoch times and the run's wall time, untracked against tracked.

EfficientNet-Lite0 (the real ImageNet weights) trained whole (``full``) at 64 px on scikit-learn's
digits, 2 epochs, in this process: untracked, recorded to the SQLite store in the run folder,
and recorded to an ``mlflow server`` on 127.0.0.1; 2 rounds in alternating order. The time spent
in MLflow's calls (opening the store, which creates the SQLite one; the run's start; each epoch; the
artifacts) is measured around them.

    .venv/bin/python bench/tracking.py
"""

from __future__ import annotations

import csv
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine, write_section  # noqa: E402

from transferkit.train import engine  # noqa: E402
from transferkit.train.config import TrainConfig  # noqa: E402
from transferkit.train.engine import fit  # noqa: E402
from transferkit.train.folder import tracking  # noqa: E402

ROUNDS = 2


def start_server(root: Path, port: int = 5987) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'store.db'}", "--artifacts-destination", str(root / "art")]
    process = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            process.url = f"http://127.0.0.1:{port}"
            return process
        except OSError:
            time.sleep(0.25)


def main() -> None:
    spent = []
    original = tracking.MlflowRun._call

    def timed(self, what, fn, *args, **kwargs):
        started = time.perf_counter()
        original(self, what, fn, *args, **kwargs)
        spent[-1] += time.perf_counter() - started

    tracking.MlflowRun._call = timed
    starting = tracking.MlflowRun.start.__func__

    def timed_start(cls, *args, **kwargs):
        started = time.perf_counter()
        try:
            return starting(cls, *args, **kwargs)
        finally:
            spent[-1] += time.perf_counter() - started

    tracking.MlflowRun.start = classmethod(timed_start)
    checking = engine.check_store

    def timed_check(*args, **kwargs):
        started = time.perf_counter()
        try:
            return checking(*args, **kwargs)
        finally:
            spent[-1] += time.perf_counter() - started

    engine.check_store = timed_check
    results: dict[str, list] = {"untracked": [], "SQLite store in the run folder": [], "mlflow server": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            ways = {
                "untracked": {},
                "SQLite store in the run folder": {"track": "mlflow"},
                "mlflow server": {"track": "mlflow", "tracking_uri": server.url},
            }
            for round_index in range(ROUNDS):
                for name in ways if round_index % 2 == 0 else list(ways)[::-1]:
                    out = Path(tmp) / f"{round_index}-{len(results[name])}-{name.split()[0]}"
                    config = TrainConfig(
                        model="tf_efficientnet_lite0", weights="lite0", data="builtin:digits", out=str(out),
                        strategy="full", epochs=2, image_size=64, seed=round_index, **ways[name],
                    )  # fmt: skip
                    spent.append(0.0)
                    started = time.perf_counter()
                    fit(config, log=lambda m: None)
                    wall = time.perf_counter() - started
                    with open(out / "metrics.csv") as f:
                        epochs = [float(row["seconds"]) for row in csv.DictReader(f)]
                    results[name].append((wall, epochs, spent[-1]))
                    print(name, round(wall, 1), [round(e, 1) for e in epochs], round(spent[-1], 3), flush=True)
        finally:
            os.killpg(server.pid, signal.SIGKILL)
    base_epoch = statistics.median(e for _, epochs, _ in results["untracked"] for e in epochs)
    base_wall = statistics.median(w for w, _, _ in results["untracked"])
    lines = [
        f"`{command_line()}` on {machine()}.",
        "",
        "tf_efficientnet_lite0 (real weights) `full` at 64 px on builtin:digits, 2 epochs, batch 32; "
        f"{ROUNDS} rounds in alternating order, in one process; medians.",
        "",
        "| recorded | epoch | against untracked | run wall time | against untracked | in MLflow's calls per run "
        "(store, start, epochs, artifacts) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        epoch = statistics.median(e for _, epochs, _ in runs for e in epochs)
        wall = statistics.median(w for w, _, _ in runs)
        calls = statistics.median(c for _, _, c in runs)
        lines.append(
            f"| {name} | {epoch:.2f} s | {epoch / base_epoch:.3f}x | {wall:.1f} s | {wall / base_wall:.3f}x | "
            f"{calls:.2f} s |"
        )
    write_section("Experiment tracking: what --track mlflow costs", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
