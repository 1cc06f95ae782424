"""``GET /metrics`` in Prometheus' text format, by prometheus_client.

Requests are counted by endpoint and status (a refused request is one with a 4xx status), with their
latency; each batch the model runs is recorded with its image count and seconds, so that how well
batching merges requests can be read off (``transferkit_batch_images``' sum over its count). With several
worker processes, prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which
:func:`~transferkit.serve.server.serve` sets) sums every worker into the one answer.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's counters and histograms, in a registry of their own (two apps in one process do not mix)."""

    def __init__(self):
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the values live in files and are collected from there, not from a registry.
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        self.requests = Counter(
            "transferkit_requests",
            "Requests answered, by endpoint and status.",
            ["endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "transferkit_request_seconds",
            "Seconds from a request's arrival to its answer.",
            ["endpoint"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.batch_images = Histogram(
            "transferkit_batch_images", "Images in each batch the model ran.", buckets=_SIZES, registry=registry
        )
        self.batch_seconds = Histogram(
            "transferkit_batch_seconds", "Seconds of each batch's forward pass.", buckets=_LATENCY, registry=registry
        )
        self.in_flight = Gauge(
            "transferkit_requests_in_flight",
            "Requests received and not yet answered.",
            multiprocess_mode="livesum",
            registry=registry,
        )

    def observe_batch(self, images: int, seconds: float) -> None:
        self.batch_images.observe(images)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        """The text format a Prometheus server scrapes."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
