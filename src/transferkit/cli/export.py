"""``transferkit export``: a run's best model as ONNX, a torch.export program, safetensors or a timm Hub
folder, proven equal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import JsonOpt, TrackingUriOpt, TrackOpt, TrustCodeOpt, emit_json, output_console


def export_command(
    run: Annotated[str, typer.Argument(metavar="RUN", help="The --out folder of a training run.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="onnx, exported-program, safetensors, timm-hub or transformers (folders for the Hub).",
        ),
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Where to write; missing folders are made (default: model.onnx etc. in RUN; timm-hub: RUN/timm-hub).",
        ),
    ] = None,
    with_preprocessing: Annotated[
        bool,
        typer.Option(
            "--with-preprocessing", help="Take uint8 NHWC images, resized and cropped, and normalise in the graph."
        ),
    ] = False,
    quantize: Annotated[
        str | None,
        typer.Option("--quantize", metavar="MODE", help="int8 with onnxruntime: dynamic, or static (calibrated)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", metavar="DATA", help="The run's DATA, when it is no longer where the run found it."),
    ] = None,
    trust_code: TrustCodeOpt = False,
    track: TrackOpt = "none",
    tracking_uri: TrackingUriOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export RUN's best model and prove it on the held-out images: largest logit difference, top-1 agreement.

    Beyond the tolerance (fp32: 1e-3 of the largest logit; int8: 1 accuracy or mAP point lost, or
    2% more mean absolute error for numbers) it
    exits 1 and writes nothing. A sidecar FILE.json carries class names, preprocessing, input
    layout, the temperature and the parity numbers. --format timm-hub writes timm's own Hub folder
    (config.json, model.safetensors, README.md), which timm.create_model("hf-hub:ORG/REPO") loads
    with the run's classes and preprocessing once uploaded; the proof runs what timm loads from it.
    """
    from ..deploy.export import export_run
    from ..train.folder.tracking import add_files, check_tracker

    console = output_console(as_json)
    check_tracker(track)
    result = export_run(
        run,
        format=format,
        out=out,
        with_preprocessing=with_preprocessing,
        quantize=quantize,
        data=data,
        trust_code=trust_code,
        log=console.print,
    )
    if track == "mlflow":
        files = [Path(result.path), *([Path(result.sidecar)] if result.sidecar else [])]
        add_files(Path(run), files, folder="exports", tracking_uri=tracking_uri, log=console.print)
    parity = result.parity
    if as_json:
        emit_json({"path": str(result.path), "sidecar": str(result.sidecar), "parity": parity})
        return
    _print_parity(console, parity)


def _print_parity(console, parity: dict) -> None:
    """The proof in two lines: the outputs' difference and the task's agreement; the run's own validation."""
    if "top1_agreement" in parity:
        agreement = (
            f"top-1 agreement {parity['top1_agreement']:.2%}, accuracy {parity['accuracy']:.4f} "
            f"(PyTorch {parity['reference_accuracy']:.4f})"
        )
    elif "decision_agreement" in parity:
        agreement = (
            f"label decisions at their thresholds agreeing {parity['decision_agreement']:.2%}, mAP "
            f"{parity['map']:.4f} (PyTorch {parity['reference_map']:.4f})"
        )
    else:
        agreement = (
            f"values differing by up to {parity['value_max_abs_diff']:.3g} in the target's units, MAE "
            f"{parity['mae']:.4g} (PyTorch {parity['reference_mae']:.4g})"
        )
    console.print(
        f"parity ({parity['precision']}, {parity['images']} images of {parity['split']}): largest logit difference "
        f"{parity['max_abs_diff']:.3g} (mean {parity['mean_abs_diff']:.3g}, largest logit {parity['scale']:.3g}), "
        + agreement,
        markup=False,
    )
    validation = (parity.get("fp32") or parity).get("run_validation")
    if validation:  # the sample's score is not the run's: training's, on every held-out image, for comparison
        scores = ", ".join(f"{k} {v:.4f}" for k, v in validation.items() if k != "epoch")
        epoch = validation["epoch"]
        console.print(f"the run's own validation (best.pt, epoch {epoch}, every held-out image): {scores}")
