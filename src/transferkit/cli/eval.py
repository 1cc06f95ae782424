"""``transferkit eval``: accuracy, per-class accuracy and confusion matrix of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    BatchSizeOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    TrackingUriOpt,
    TrackOpt,
    TrustCodeOpt,
    TtaOpt,
    console,
    emit_json,
    note,
)


def eval_command(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN|WEIGHTS",
            help="A run folder, or with --data an exported .onnx or weights (a checkpoint file, lite0, a hub spec).",
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option("--data", metavar="DATA", help="DATA to evaluate on (default: the run's held-out split)."),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", metavar="SPLIT", help="val, or test: the test folder training never saw.")
    ] = "val",
    model: ModelOpt = None,
    which: Annotated[str, typer.Option("--checkpoint", metavar="NAME", help="best or last.")] = "best",
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = None,
    report: Annotated[
        bool | None,
        typer.Option(
            "--report/--no-report", help="Write report.html (plots, top losses) into the run folder (default: on)."
        ),
    ] = None,
    tta: TtaOpt = False,
    trust_code: TrustCodeOpt = False,
    track: TrackOpt = "none",
    tracking_uri: TrackingUriOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a trained run or weights: accuracy, balanced accuracy, macro-F1, per-class metrics, confusion matrix."""
    from ..inference.runs import evaluate_run
    from ..inference.task_eval import score_line
    from ..train.folder.tracking import add_files, check_tracker

    check_tracker(track)
    result = evaluate_run(
        run,
        data,
        model=model,
        which=which,
        device=device,
        batch_size=batch_size,
        trust_code=trust_code,
        split=split,
        report=Path(run).is_dir() if report is None else report,
        tta=tta,
    )
    for line in result["notes"]:
        note(line)
    if track == "mlflow" and result.get("report"):
        add_files(Path(run), [Path(result["report"])], folder="reports", tracking_uri=tracking_uri, log=note)
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['run']} on {result['data']} ({result['split']}, {result['images']} images)")
    if result.get("task", "classification") != "classification":
        _print_task(result)
        return
    console.print(score_line(result))
    _print_confusion(result)
    if result["most_confused"]:
        pairs = ", ".join(f"{p['true']} as {p['predicted']} ({p['count']})" for p in result["most_confused"])
        console.print(f"most confused: {pairs}")
    ece = f"expected calibration error (15 bins) {result['calibration']['ece']:.4f}"
    if result["calibrated"]:
        ece += f", {result['calibrated']['ece']:.4f} with the run's temperature {result['temperature']:.3f}"
    console.print(ece)
    validation = result.get("validation")
    if validation and validation["same"]:
        console.print(f"the same accuracy as training's validation of epoch {validation['epoch']}")
    if result.get("report"):
        console.print(f"report: {result['report']}")
    if result["skipped_images"]:
        console.print(
            f"{len(result['skipped_images'])} unusable images skipped, e.g. {result['skipped_images'][0]['name']}"
        )


def _print_confusion(result: dict) -> None:
    """The confusion matrix with each class's precision, recall, F1 and support. Predicted classes are columns
    headed by their row's number, so that no class name is ever cut."""
    from rich.table import Table

    names = result["class_names"]
    table = Table(title="confusion matrix (rows: true class, columns: predicted, by the rows' numbers)")
    table.add_column("class", no_wrap=True, min_width=max(len(n) for n in names) + len(str(len(names))) + 1)
    for index in range(len(names)):
        table.add_column(str(index), justify="right", no_wrap=True)
    for column in ("precision", "recall", "F1", "support"):
        table.add_column(column, justify="right", no_wrap=True)
    for index, (name, row) in enumerate(zip(names, result["confusion_matrix"])):
        c = result["per_class"][name]
        recall = "-" if c["recall"] is None else f"{c['recall']:.3f}"
        cells = (f"{c['precision']:.3f}", recall, f"{c['f1']:.3f}", str(c["support"]))
        table.add_row(f"{index} {name}", *map(str, row), *cells)
    console.print(table)


def _print_task(result: dict) -> None:
    """The scores of several labels per image (with a table per label) or of numbers (with the interval)."""
    from rich.table import Table

    from ..inference.task_eval import score_line

    console.print(score_line(result))
    if result["task"] == "multi-label":
        table = Table(title="per label (precision, recall and F1 at the run's thresholds, as predict decides)")
        for column in ("label", "AP", "precision", "recall", "F1", "images with it", "threshold"):
            table.add_column(column, justify="left" if column == "label" else "right")
        for name, m in result["per_label"].items():
            ap = "-" if m["ap"] is None else f"{m['ap']:.3f}"
            cells = [f"{m[k]:.3f}" for k in ("precision", "recall", "f1")]
            table.add_row(name, ap, *cells, str(m["support"]), f"{m['threshold']:.3f}")
        console.print(table)
        ece = f"expected calibration error of the label probabilities {result['calibration']['ece']:.4f}"
        if result.get("calibrated"):
            ece += f", {result['calibrated']['ece']:.4f} with the run's per-label temperatures"
        console.print(ece)
    else:
        interval = result.get("interval")
        if interval is not None:
            console.print(
                f"{interval['level']:.0%} interval (value ± {interval['half_width']:.4g}) holds the true value of "
                f"{interval['coverage']:.1%} of these images"
            )
    if result.get("report"):
        console.print(f"report: {result['report']}")
    if result["skipped_images"]:
        console.print(
            f"{len(result['skipped_images'])} unusable images skipped, e.g. {result['skipped_images'][0]['name']}"
        )
