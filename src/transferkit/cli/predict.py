"""``transferkit predict``: class names and probabilities for image files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..predict import load_predictor
from ._common import JsonOpt, console, emit_json


def predict_command(
    source: Annotated[
        str, typer.Argument(metavar="RUN|WEIGHTS", help="A run folder from train, or registry weights such as lite0.")
    ],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files.")],
    model: Annotated[str | None, typer.Option("--model", help="Build this MODEL instead of the weights' own.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many classes to show per image.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Classify images and show class names with probabilities."""
    predictor = load_predictor(source, model=model)
    results = predictor.predict(images, top_k=top_k)
    if as_json:
        emit_json({"source": source, "predictions": results})
        return
    for result in results:
        console.print(f"[bold]{result['image']}[/]")
        for entry in result["top"]:
            console.print(f"  {entry['probability']:6.1%}  {entry['index']:>4}  {entry['label']}")
