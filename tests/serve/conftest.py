"""What the server tests share: the real command serving the session's tiny run, in a process of its own."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transferkit.serve.client import Client

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``transferkit serve RUN --trust-code --device cpu OPTIONS...`` in a subprocess on 127.0.0.1, ready once
    /health answers; on a free port unless OPTIONS name one."""

    def __init__(self, run_folder: Path, *options: str):
        self.port = int(options[options.index("--port") + 1]) if "--port" in options else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "transferkit", "serve", str(run_folder), "--trust-code", "--device", "cpu"]
        command += [] if "--port" in options else ["--port", str(self.port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the run's MODEL is tests.helpers:TinyNet
        self.process = subprocess.Popen([*command, *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if Client(self.url, timeout=2).health() == {"status": "ok"}:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not start: {self.process.stderr.read().decode()[-2000:]}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        """Signal it, wait for it to exit: (exit code, stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return self.process.returncode, err.decode()


@pytest.fixture(scope="module")
def served(tiny_run):
    """The run served with small limits (1 MiB bodies, 4 images a request, 1 megapixel) and 100 ms to batch."""
    server = Served(
        tiny_run[0], "--max-wait-ms", "100", "--max-body-mb", "1", "--max-images", "4", "--max-pixels", "1000000"
    )
    yield server
    server.stop()
