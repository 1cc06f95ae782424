"""``transferkit predict``: classes and probabilities, the labels that apply, or a number, for image files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import BatchSizeOpt, DeviceOpt, JsonOpt, ModelOpt, TrustCodeOpt, TtaOpt, console, emit_json, note


def predict_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="RUN|WEIGHTS",
            help="A run folder, an exported .onnx, a checkpoint file, registry weights (lite0) or a hub spec.",
        ),
    ],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files.")],
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", metavar="K", min=1, help="How many classes to show per image.")] = 5,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = None,
    tta: TtaOpt = False,
    uncalibrated: Annotated[
        bool,
        typer.Option(
            "--uncalibrated", help="Raw probabilities (the softmax, or each label's sigmoid), without the temperatures."
        ),
    ] = False,
    trust_code: TrustCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Classify images (class names with probabilities), or name the labels that apply, or give the number."""
    from ..inference.predict import load_predictor

    predictor = load_predictor(
        source,
        model=model,
        device=device,
        batch_size=batch_size,
        trust_code=trust_code,
        tta=tta,
        uncalibrated=uncalibrated,
    )
    for line in predictor.notes:
        note(line)
    results = predictor.predict(images, top_k=top_k)
    if as_json:
        emit_json({"source": source, "probabilities": predictor.probabilities, "predictions": results})
        return
    if predictor.probabilities:
        note(f"probabilities: {predictor.probabilities}")
    for result in results:
        if "error" in result:
            note(f"skipped {result['error']}")
            continue
        console.print(result["image"], style="bold")
        if "value" in result:
            around = ""
            if "interval" in result:
                low, high = result["interval"]
                around = f"  ({result['level']:.0%} interval {low:.4g} to {high:.4g})"
            console.print(f"  {result['value']:.4g}{around}")
            continue
        if "labels" in result:
            if not result["labels"]:
                console.print("  no label reaches its threshold")
            for entry in result["labels"]:
                console.print(f"  {entry['probability']:6.1%}  {entry['label']}  (threshold {entry['threshold']:.2f})")
            continue
        for entry in result["top"]:
            console.print(f"  {entry['probability']:6.1%}  {entry['index']:>4}  {entry['label']}")
