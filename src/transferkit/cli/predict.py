"""``transferkit predict``: classes and probabilities, the labels that apply, or a number, for image files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import BatchSizeOpt, DeviceOpt, JsonOpt, ModelOpt, TrustCodeOpt, TtaOpt, console, emit_json, note

OutOpt = Annotated[
    Path | None,
    typer.Option("--out", metavar="FILE", help="Write a row per image to FILE (.csv, .jsonl or .parquet), in parts."),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="With --out: go on with an interrupted prediction into FILE.")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", metavar="N", min=0, help="With --out: processes decoding images ahead (default: CPU cores - 2)."
    ),
]


def predict_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="RUN|WEIGHTS",
            help="A run folder, an exported .onnx, a checkpoint file, registry weights (lite0) or a hub spec.",
        ),
    ],
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE...|DATA",
            help="Image files; with --out a folder (recursively), a CSV of paths, hf:NAME, wds:SHARDS or builtin:NAME.",
        ),
    ],
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
    out: OutOpt = None,
    resume: ResumeOpt = False,
    workers: WorkersOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify images (class names with probabilities), or name the labels that apply, or give the number.

    With --out, a folder (recursively), a CSV with a path column (and a label column for accuracy) or many files
    are predicted into one file, a part at a time: --resume goes on after an interruption.
    """
    from ..errors import DataError
    from ..inference.batch import names_many, predict_to_file
    from ..inference.predict import load_predictor

    folders = [str(p) for p in images if names_many(p)]
    if folders and (out is None or len(images) > 1):
        raise DataError(
            f"{folders[0]} is a folder, CSV or dataset: predict it alone, with --out FILE (.csv, .jsonl or .parquet)."
        )

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
    if out is not None:
        data = images[0] if folders else images
        written = predict_to_file(predictor, data, out, top_k=top_k, resume=resume, workers=workers, log=note)
        if as_json:
            fields = ("images", "unreadable", "accuracy")
            emit_json({"source": source, "out": str(written.out), **{k: getattr(written, k) for k in fields}})
        return
    results = predictor.predict(images, top_k=top_k)
    if as_json:
        emit_json({"source": source, "probabilities": predictor.probabilities, "predictions": results})
        return
    if predictor.probabilities:
        note(f"probabilities: {predictor.probabilities}")
    _print(results)


def _print(results: list[dict]) -> None:
    """Each image's classes, labels or value on the terminal; the unreadable ones as notes."""
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
