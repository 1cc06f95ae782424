"""Two torchrun node groups on this machine, each with its own run folder (no shared filesystem)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.helpers import make_image_folder, tiny_config
from transferkit.errors import ConfigError
from transferkit.train.engine import _check_same_settings
from transferkit.train.parallel.distributed import DistContext

ROOT = Path(__file__).resolve().parents[3]
# One thread a process, as torchrun sets for nodes of several processes: kernels then sum in one order
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TRAIN = ["--image-size", "16", "--batch-size", "8", "--lr", "0.05", "--precision", "fp32", "--no-channels-last"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node(port: int, *args, processes: int = 1) -> subprocess.Popen:
    """One node of ``processes`` in a job of 2 such nodes, meeting at 127.0.0.1:``port``.

    One process a node: each takes seconds to start on two cores, and two processes on one node
    are what the other distributed tests run."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", str(processes)]
    launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
    return subprocess.Popen(
        [*launcher, "-m", "transferkit", "train", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def two_nodes(first: list, second: list) -> tuple[str, str]:
    """Each node's output, run to the end (the first started first: its agent's lower pid gets it global rank 0)."""
    port = free_port()
    a = node(port, *first)
    time.sleep(1)
    b = node(port, *second)
    outs = [p.communicate(timeout=300) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs[0][1][-1500:] + outs[1][1][-1500:]
    return outs[0][0] + outs[0][1], outs[1][0] + outs[1][1]


def weights(run: Path, which: str) -> dict:
    return torch.load(run / f"{which}.pt", map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_two_nodes_equal_one_node_of_two_resume_across_nodes_and_a_dead_node_ends_the_run(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=24)
    model = ["tests.helpers:TinyNet", "--data", data, *TRAIN, "--strategy", "full"]
    single = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "transferkit"]
        + ["train", *map(str, model), "--epochs", "3", "--json", "--out", str(tmp_path / "single")],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    json.loads(single.stdout)  # one JSON object: only rank 0 prints
    assert single.stderr.count("epoch 3/3") == 1

    # Stopped after 2 of 3 epochs, then resumed: the rank-0 node has the run, the other node nothing.
    main, other = tmp_path / "node0", tmp_path / "node1"
    first = [*model, "--epochs", "3", "--stop-after", "2"]
    two_nodes([*first, "--out", main], [*first, "--out", other])
    assert (main / "last.pt").is_file() and not other.exists()  # a rank of node 1 wrote nothing in its --out
    log, _ = two_nodes(["--resume", main, "--trust-code"], ["--resume", other, "--trust-code"])
    assert "resuming" in log and not other.exists()
    assert sorted(p.name for p in main.iterdir()) == sorted(p.name for p in (tmp_path / "single").iterdir())
    assert len(list((main / "tensorboard").iterdir())) == 2  # one event file per start, by rank 0 alone

    def rows(run):
        return [line.split(",")[:8] for line in (run / "metrics.csv").read_text().splitlines()]  # not the seconds

    assert len(rows(main)) == 4 and rows(main) == rows(tmp_path / "single")
    ours, reference = weights(main, "best"), weights(tmp_path / "single", "best")  # epoch 2: before resuming
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    # After resuming, DDP's gradient buckets are built anew, which sums in another order: float rounding only.
    ours, reference = weights(main, "last"), weights(tmp_path / "single", "last")
    assert all(torch.allclose(ours[k].float(), reference[k].float(), rtol=0, atol=1e-6) for k in reference)
    assert rows(main)[-1][2] < rows(main)[1][2]  # the loss fell: the weights compared are trained ones

    # A node that dies (its agent and processes killed) ends the other node with one line, not a hang.
    port = free_port()
    endless = [*model, "--strategy", "scratch", "--epochs", "100000"]
    a = node(port, *endless, "--out", tmp_path / "k0")
    time.sleep(1)
    b = node(port, *endless, "--out", tmp_path / "k1")
    deadline = time.monotonic() + 120
    while not (tmp_path / "k0" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    killed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(b.pid)], capture_output=True, text=True).stdout.split()
    for pid in [b.pid, *map(int, killed)]:
        os.kill(pid, signal.SIGKILL)
    b.communicate()
    started = time.monotonic()
    _, err = a.communicate(timeout=120)
    assert a.returncode != 0 and time.monotonic() - started < 60
    assert "another process of this distributed run stopped" in err and "internal error" not in err


class OtherRank(DistContext):
    """Rank 1 of 2, told rank 0's settings; every rank's check is its own (no process group)."""

    def __init__(self, main_settings: dict):
        super().__init__(rank=1, world_size=2)
        self.main_settings = main_settings

    def from_main(self, value):
        return self.main_settings

    def everyone(self, flag: bool) -> bool:
        return flag


def test_a_node_started_with_other_settings_is_refused_naming_them(tmp_path):
    config = tiny_config(tmp_path / "data", tmp_path / "out", epochs=3)
    main = {**config.to_dict(), "out": None, "stop_after": None}
    _check_same_settings(replace(config, out=str(tmp_path / "elsewhere")), None, OtherRank(main))  # only out differs
    with pytest.raises(ConfigError, match="epochs, stop_after differ from rank 0's.*only --out may differ"):
        _check_same_settings(replace(config, epochs=4), 2, OtherRank(main))
