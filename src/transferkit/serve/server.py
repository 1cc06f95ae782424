"""Run the application under uvicorn: one process with the model, or several (``workers``), each with its own.

uvicorn stops gracefully on SIGINT or SIGTERM: it stops accepting connections, lets every request in flight
be answered (up to :data:`GRACE` seconds), then stops the batcher. With several workers the model is loaded
in each worker process, the CPU's cores are shared out between them, and their metrics are summed through
prometheus_client's multiprocess directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile

from ..errors import ConfigError
from ..inference.predict import load_predictor
from .app import create_app
from .batcher import model_executor
from .options import ServeOptions

__all__ = ["GRACE", "LOCAL_HOSTS", "serve", "app_from_environment"]

GRACE = 30  # seconds a shutdown waits for requests in flight before closing their connections
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_ENVIRONMENT = "TRANSFERKIT_SERVE"  # the worker processes' instructions: what to load and how to serve


def serve(source: str, options: ServeOptions = ServeOptions(), *, log=print, **load) -> None:
    """Serve ``source`` (a run folder, an exported ``.onnx``, registry weights: what
    :func:`~transferkit.inference.predict.load_predictor` takes, with its keyword arguments in ``load``) over
    HTTP until interrupted. The model is loaded before the port is opened, so that a model that cannot be
    loaded is an error, not a server that answers 500s.

    Example::

        serve("runs/cats", ServeOptions(port=8000, max_batch=16))
    """
    import uvicorn

    model_thread = model_executor()
    predictor = model_thread.submit(load_predictor, source, **load).result()
    for line in predictor.notes:
        log(line)
    if options.host not in LOCAL_HOSTS:
        log(f"serving on {options.host}: anyone who can reach this machine there can send images to the model")
    settings = dict(
        host=options.host,
        port=options.port,
        timeout_graceful_shutdown=GRACE,
        access_log=False,  # one line per request would drown the log under load; /metrics counts them
        log_level="info",
    )
    _check_free(options.host, options.port)
    if options.workers == 1:
        uvicorn.run(create_app(predictor, options, source=source, model_thread=model_thread), **settings)
        return
    del predictor  # each worker loads its own
    model_thread.shutdown()
    metrics_dir = tempfile.mkdtemp(prefix="transferkit-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[_ENVIRONMENT] = json.dumps({"source": source, "load": load, "options": options.to_dict()})
    try:
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=options.workers, **settings)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_free(host: str, port: int) -> None:
    """Refuse an address that cannot be listened on in one line, before uvicorn would log its way out."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"Cannot listen on {host}:{port}: {e.strerror}. Choose another port, or stop what uses it.",
                argument="port",
            ) from None


def app_from_environment():
    """A worker process's application, from what :func:`serve` left in the environment."""
    import torch

    given = json.loads(os.environ[_ENVIRONMENT])
    options = ServeOptions(**given["options"])
    torch.set_num_threads(max(1, torch.get_num_threads() // options.workers))  # the workers share the cores
    model_thread = model_executor()
    predictor = model_thread.submit(load_predictor, given["source"], **given["load"]).result()
    return create_app(predictor, options, source=given["source"], model_thread=model_thread)
