"""How a server serves: its address, batching and limits, one dataclass checked once."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError

__all__ = ["ServeOptions"]


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``transferkit serve`` takes besides the model.

    The defaults for batching are measured (BENCHMARKS.md, "Serving under load"): requests that arrive while
    the model runs a batch form the next one, so that under load batches grow without waiting. A wait
    (``max_wait_ms``) cost a lone request about its length in latency and gave 8 clients nothing beyond this
    machine's noise; at 32 clients 20 ms gave 12-16% more requests/s in two runs: a choice for servers that are
    always busy, not the default. ``max_batch`` 8, 16, 32 and 64 at 32 clients: 32 served the most, by a few
    percent.
    """

    host: str = "127.0.0.1"  # this machine only; another address serves whoever can reach it
    port: int = 8000
    max_batch: int = 32  # images per forward pass at most; 1 turns batching off
    max_wait_ms: float = 0.0  # how long the first request of a batch waits for others (beyond those queued)
    max_body_bytes: int = 32 * 2**20  # a request's body, counted as it arrives
    max_images: int = 64  # files in one multipart request
    max_pixels: int = 40_000_000  # one image's width x height, read from its header before it is decoded
    top_k: int = 5  # classes per image unless a request asks ?top_k=
    workers: int = 1  # processes, each with the model loaded once

    def __post_init__(self):
        ranges = {
            "port": (0, 65535),
            "max_batch": (1, 4096),
            "max_body_bytes": (1024, 2**34),
            "max_images": (1, 10_000),
            "max_pixels": (1, 2**40),
            "top_k": (1, 100_000),
            "workers": (1, 256),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not (isinstance(value, int) and low <= value <= high):
                raise ConfigError(f"{name} must be a whole number from {low} to {high}; got {value!r}.", argument=name)
        if not (0 <= self.max_wait_ms <= 10_000):
            raise ConfigError(
                f"max_wait_ms must be from 0 to 10000 milliseconds; got {self.max_wait_ms!r}.", argument="max_wait_ms"
            )

    def to_dict(self) -> dict:
        return asdict(self)
