"""``eval`` of a run that predicts several labels per image or a number: the task's metrics on some images.

The metrics are the ones training validated with (:mod:`transferkit.tasks.metrics`). Several
labels: the decisions (precision, recall, F1, subset accuracy, Hamming loss) are taken at the
run's thresholds, as ``predict`` takes them; average precision needs none. Probabilities are
calibrated by the run's per-label temperatures, and the thresholds move with them. For numbers with an
interval, the share of images whose true value falls inside it is reported too: about the
interval's level on images like the validation images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data.decode import Decoded, ImageDataset, decode, loader_workers
from ..data.preprocess import BatchPrep
from ..tasks.calibration import binary_ece, calibrated_thresholds, label_probabilities
from ..tasks.metrics import at_thresholds, multilabel_metrics, regression_metrics
from ..tasks.objective import loss_function
from ..train.phases.loop import evaluate_outputs
from .trained import TrainedModel

__all__ = ["evaluate_task", "score_line"]


def score_line(result: dict) -> str:
    """The headline scores of an evaluation (what ``eval`` prints first), for classes, several labels or numbers."""
    task = result.get("task", "classification")
    if task == "multi-label":
        return (
            f"mAP {result['map']:.4f} (micro {result['map_micro']:.4f}), macro-F1 {result['macro_f1']:.4f}, "
            f"subset accuracy {result['subset_accuracy']:.4f}, Hamming loss {result['hamming_loss']:.4f}, "
            f"loss {result['loss']:.4f}"
        )
    if task == "regression":
        return (
            f"MAE {result['mae']:.4g}, RMSE {result['rmse']:.4g}, R² {result['r2']:.4f}, "
            f"Spearman {result['spearman']:.4f}, loss {result['loss']:.4f}"
        )
    return (
        f"accuracy {result['accuracy']:.4f}, balanced accuracy {result['balanced_accuracy']:.4f}, "
        f"macro-F1 {result['macro_f1']:.4f}, loss {result['loss']:.4f}"
    )


def _label_scores(trained: TrainedModel, logits: torch.Tensor, targets: torch.Tensor, out: dict) -> torch.Tensor:
    """The scores of several labels into ``out``: mAP (ranked), and at the run's thresholds (moved with its
    per-label temperatures) what predict decides; the expected calibration error. Returns the probabilities."""
    names = trained.class_names
    ranked = multilabel_metrics(logits, targets, names)
    temperatures = trained.temperature if isinstance(trained.temperature, list) else None
    outputs = label_probabilities(logits, temperatures)
    thresholds = calibrated_thresholds(trained.thresholds or [0.5] * len(names), temperatures)
    kept = at_thresholds(targets, outputs, thresholds, names)
    per_label = {
        name: {
            "ap": ranked["per_label"][name]["ap"],
            **kept["per_label"][name],
            "support": ranked["per_label"][name]["support"],
            "threshold": thresholds[k],
        }
        for k, name in enumerate(names)
    }
    out.update(map=ranked["map"], map_micro=ranked["map_micro"], label_names=names, thresholds=thresholds)
    out.update({key: kept[key] for key in ("macro_f1", "subset_accuracy", "hamming_loss")}, per_label=per_label)
    out["at_thresholds"] = kept
    out["calibration"] = {"ece": binary_ece(label_probabilities(logits, None), targets)}
    out["temperature"] = temperatures
    out["calibrated"] = {"ece": binary_ece(outputs, targets)} if temperatures else None
    return outputs


def evaluate_task(
    trained: TrainedModel,
    items: list | Decoded,
    *,
    spill: Path | None,
    batch_size: int | None,
    about: dict,
    report: list[dict] | None = None,
) -> dict:
    """Loss and metrics of ``trained`` on ``items``, with the checkpoint's validation scores beside them.

    ``about`` (what was evaluated: ``run``, ``data``, ``split``) opens the result. With ``report``
    (the run's history), ``report.html`` and its plots are written into ``spill``, the run folder
    (:func:`~transferkit.inference.task_report.write_task_report`).
    """
    decoded = items if isinstance(items, Decoded) else decode(items, trained.preprocessing, spill_dir=spill)
    device = next(trained.model.parameters()).device
    dataset = ImageDataset(decoded)
    loss = trained.config.loss if trained.config is not None else "auto"
    regression_loss = "mse" if loss == "auto" else loss
    result = evaluate_outputs(
        trained.model,
        DataLoader(
            dataset, batch_size=batch_size or trained.fast.inference_batch_size, num_workers=loader_workers(dataset)
        ),
        loss_fn=loss_function(trained.task, scale=trained.target_scale, regression_loss=regression_loss),
        prep=BatchPrep(trained.preprocessing, device, channels_last=trained.fast.channels_last),
        device=device,
        precision=trained.fast.precision,
    )
    logits, targets = result["logits"], result["targets"]
    out = {**about, "task": trained.task, "images": result["count"], "loss": result["loss"]}
    if trained.task == "multi-label":
        outputs = _label_scores(trained, logits, targets, out)
        headline = "map"
    else:
        out.update(regression_metrics(logits, targets, trained.target_scale), target=trained.class_names[0])
        headline = "mae"
        outputs = trained.target_scale.restore(logits).float()
        if trained.interval is not None:
            residuals = (outputs - targets.float()).abs()
            out["interval"] = {
                **trained.interval,
                "coverage": float((residuals <= trained.interval["half_width"]).float().mean()),
            }
    if trained.validated is not None:
        row = trained.validated["row"]
        out["validation"] = {"epoch": row["epoch"], f"val_{headline}": row.get(f"val_{headline}")}
    out["skipped_images"] = [{"name": n, "reason": r} for n, r in decoded.skipped]
    if report is not None:
        from .task_report import write_task_report

        written = write_task_report(
            spill,
            out,
            history=report,
            images=decoded.images,
            names=decoded.names,
            outputs=outputs,
            targets=targets.float() if trained.task == "regression" else targets,
        )
        out["report"] = str(written)
    return out
