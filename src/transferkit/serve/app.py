"""The HTTP application: ``POST /predict``, ``GET /health``, ``GET /metadata`` and ``GET /metrics`` (Starlette).

The model is loaded once per process, before the first request; requests are decoded on Starlette's
thread pool and batched onto the model's own thread (:mod:`~transferkit.serve.batcher`). Every answer is
one JSON object: ``{"predictions": [...]}``, each prediction what :meth:`Predictor.predict
<transferkit.inference.predict.Predictor.predict>` gives for a file, or ``{"error": "..."}`` with a 4xx
status for a request that cannot be served as sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..inference.predict import Predictor
from .batcher import Batcher
from .inputs import Refused, decode, read_images
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .options import ServeOptions

__all__ = ["create_app"]

log = logging.getLogger("transferkit.serve")


def create_app(
    predictor: Predictor,
    options: ServeOptions = ServeOptions(),
    *,
    source: str = "",
    model_thread: ThreadPoolExecutor | None = None,
) -> Starlette:
    """The application serving ``predictor`` (:func:`~transferkit.inference.predict.load_predictor`), for uvicorn
    or any ASGI server; ``source`` names the model in ``/metadata``. ``model_thread``: the executor
    (:func:`~transferkit.serve.batcher.model_executor`) that loaded the predictor, to run it on. The predictor's
    ``batch_size`` becomes ``options.max_batch``.

    Example::

        app = create_app(load_predictor("runs/cats"), ServeOptions(max_batch=16))
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    metrics = Metrics()
    predictor.batch_size = options.max_batch  # one forward pass per batch (a larger request is cut into several)
    batcher = Batcher(
        lambda images, names, top_k: predictor.predict_tensors(images, names, top_k=top_k),
        max_batch=options.max_batch,
        max_wait=options.max_wait_ms / 1000,
        observe=metrics.observe_batch,
        model_thread=model_thread,
    )
    metadata = _metadata(predictor, options, source)

    async def predict(request: Request) -> Response:
        top_k = request.query_params.get("top_k", str(options.top_k))
        if not (top_k.isdigit() and int(top_k) >= 1):
            raise Refused(400, f"top_k must be a whole number of 1 or more; got '{top_k[:40]}'.")
        files = await read_images(request, max_bytes=options.max_body_bytes, max_images=options.max_images)
        images = await run_in_threadpool(
            lambda: [decode(data, name, predictor.preprocessing, max_pixels=options.max_pixels) for name, data in files]
        )
        results = await batcher.submit(images, [name for name, _ in files], int(top_k))
        return JSONResponse({"predictions": results})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def describe(request: Request) -> Response:
        return JSONResponse(metadata)

    async def scrape(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()  # uvicorn has let the requests in flight finish by now

    routes = [
        Route("/predict", _answered(predict, "/predict", metrics), methods=["POST"]),
        Route("/health", _answered(health, "/health", metrics), methods=["GET"]),
        Route("/metadata", _answered(describe, "/metadata", metrics), methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _as_json})


async def _as_json(request: Request, e: HTTPException) -> Response:
    """Starlette's own refusals (no such path, another method) as the one JSON line every refusal is."""
    methods = {m for route in request.app.routes if route.path == request.url.path for m in route.methods or ()}
    allowed = " or ".join(sorted(methods - {"HEAD"}))
    message = {
        404: f"No endpoint {request.url.path}; there are POST /predict, GET /health, GET /metadata and GET /metrics.",
        405: f"{request.method} is not accepted by {request.url.path}; use {allowed}.",
    }.get(e.status_code, e.detail)
    return JSONResponse({"error": message}, status_code=e.status_code, headers=e.headers)


def _answered(handler, endpoint: str, metrics: Metrics):
    """``handler`` counted and timed, its :class:`Refused` turned into a 4xx and any other failure into a 500."""

    async def endpoint_handler(request: Request) -> Response:
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = await handler(request)
        except Refused as e:
            response = JSONResponse({"error": e.message}, status_code=e.status)
        except Exception as e:  # the server goes on; the client learns it was not its fault
            log.exception("%s failed", endpoint)
            response = JSONResponse({"error": f"The server failed on this request: {type(e).__name__}: {e}"}, 500)
        finally:
            metrics.in_flight.dec()
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    return endpoint_handler


def _metadata(predictor: Predictor, options: ServeOptions, source: str) -> dict:
    """What a client needs to know to send images and read the answers."""
    return {
        "source": source,
        "task": predictor.task,
        "classes": predictor.class_names,
        "preprocessing": dataclasses.asdict(predictor.preprocessing),
        "probabilities": predictor.probabilities,
        "temperature": predictor.temperature,
        "thresholds": predictor.thresholds,
        "interval": predictor.interval,
        "tta": predictor.tta,
        "batching": {"max_batch": options.max_batch, "max_wait_ms": options.max_wait_ms},
        "limits": {k: getattr(options, k) for k in ("max_body_bytes", "max_images", "max_pixels")},
        "notes": predictor.notes,
        "transferkit": __version__,
    }
