"""``transferkit serve``: a run, an export or weights behind HTTP, with batching, limits and metrics."""

from __future__ import annotations

from typing import Annotated

import typer

from ..serve.options import ServeOptions
from ._common import DeviceOpt, ModelOpt, TrustCodeOpt, TtaOpt, note

_D = ServeOptions()  # the defaults, declared once (the module imports nothing heavy)


def serve_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="RUN|WEIGHTS",
            help="A run folder, an exported .onnx, a checkpoint file, registry weights (lite0) or a hub spec.",
        ),
    ],
    host: Annotated[
        str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on; another than 127.0.0.1 is public.")
    ] = _D.host,
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port to listen on.")] = _D.port,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", min=1, help="Processes, each with the model loaded once.")
    ] = _D.workers,
    max_batch: Annotated[
        int,
        typer.Option("--max-batch", metavar="N", min=1, help="Images per forward pass at most; 1 turns batching off."),
    ] = _D.max_batch,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-wait-ms",
            metavar="MS",
            min=0,
            help="How long a batch's first request waits for others beyond those queued.",
        ),
    ] = _D.max_wait_ms,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", metavar="MB", min=0.001, help="A request's body, at most (MiB).")
    ] = _D.max_body_bytes / 2**20,
    max_images: Annotated[
        int, typer.Option("--max-images", metavar="N", min=1, help="Images in one multipart request, at most.")
    ] = _D.max_images,
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels", metavar="N", min=1, help="One image's width x height at most, read before decoding."
        ),
    ] = _D.max_pixels,
    top_k: Annotated[
        int, typer.Option("--top-k", metavar="K", min=1, help="Classes per image unless a request asks ?top_k=.")
    ] = _D.top_k,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    tta: TtaOpt = False,
    uncalibrated: Annotated[
        bool, typer.Option("--uncalibrated", help="Raw probabilities, without the run's temperatures.")
    ] = False,
    trust_code: TrustCodeOpt = False,
) -> None:
    """Serve the model over HTTP: POST /predict (an image as the body, or several as multipart files),
    GET /health, GET /metadata and GET /metrics (Prometheus). Requests that arrive together are batched.

    Stops on Ctrl+C or SIGTERM once the requests in flight are answered.
    """
    from ..errors import Interrupted
    from ..serve.server import serve

    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_body_bytes=int(max_body_mb * 2**20),
        max_images=max_images,
        max_pixels=max_pixels,
        top_k=top_k,
    )
    load = dict(model=model, device=device, trust_code=trust_code, tta=tta, uncalibrated=uncalibrated)
    try:
        serve(source, options, log=note, **load)
    except Interrupted:  # uvicorn has shut down gracefully and passes the signal on
        note("stopped: every request in flight was answered")
