"""One validation pass with the metrics of the run's task: the epoch's scores, what best.pt keeps, the log's words.

Classes are scored from the confusion matrix (:mod:`transferkit.tasks.metrics`); several labels
per image and numbers from every output (:mod:`transferkit.tasks.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...tasks.metrics import classification_metrics, multilabel_metrics, regression_metrics
from ..parallel.sharding import is_sharded
from .loop import evaluate, evaluate_outputs

__all__ = ["Validation", "validate"]


@dataclass
class Validation:
    loss: float
    scores: dict[str, float]  # the epoch row's val_* values
    details: dict  # what best.pt keeps: per class or per label, confusions, thresholds
    outputs: tuple[torch.Tensor, torch.Tensor] | None  # (logits, targets) in this process, for the calibration
    text: str  # the scores for the epoch's log line


def validate(setup, record, *, device, dist_ctx, precision: str, trial, progress=None, log=None) -> Validation:
    """Validate ``setup.step.eval_net`` on ``setup.inputs.val_loader`` with the kernels ``precision`` (or ``trial``'s).

    ``progress`` names the pass in its progress, shown to ``log``."""
    data = record.data
    dist_ctx.share_buffers(setup.step.eval_net)  # every rank validates the model rank 0 saves
    # A sharded model's forward gathers from every rank: each runs as many batches.
    loader = dist_ctx.lockstep(setup.inputs.val_loader) if is_sharded(setup.step.eval_net) else setup.inputs.val_loader
    if data.task == "classification":
        metrics = evaluate(
            setup.step.eval_net,
            loader,
            num_classes=len(data.class_names),
            prep=setup.kernels.val_prep,
            device=device,
            precision=precision,
            dist_ctx=dist_ctx,
            outputs=not dist_ctx.enabled,  # this process's logits: all of them without torchrun
            trial=trial,
            progress=progress,
            log=log,
        )
        scores = classification_metrics(metrics["confusion"].tolist(), data.class_names)
        return Validation(
            metrics["loss"],
            {
                "val_acc": metrics["accuracy"],
                "val_balanced_acc": scores["balanced_accuracy"],
                "val_macro_f1": scores["macro_f1"],
            },
            {k: scores[k] for k in ("per_class", "most_confused")},
            (metrics["logits"], metrics["targets"]) if "logits" in metrics else None,
            f"val_acc {metrics['accuracy']:.4f} balanced {scores['balanced_accuracy']:.4f} "
            f"macro_f1 {scores['macro_f1']:.4f}",
        )
    result = evaluate_outputs(
        setup.step.eval_net,
        loader,
        loss_fn=setup.step.loss_fn,
        prep=setup.kernels.val_prep,
        device=device,
        precision=precision,
        trial=trial,
        dist_ctx=dist_ctx,
        progress=progress,
        log=log,
    )
    logits, targets = result["logits"], result["targets"]
    if data.task == "multi-label":
        m = multilabel_metrics(logits, targets, data.class_names)
        scores = {
            "val_map": m["map"],
            "val_map_micro": m["map_micro"],
            "val_macro_f1": m["macro_f1"],
            "val_subset_acc": m["subset_accuracy"],
            "val_hamming": m["hamming_loss"],
        }
        text = (
            f"val_map {m['map']:.4f} micro {m['map_micro']:.4f} macro_f1 {m['macro_f1']:.4f} "
            f"subset_acc {m['subset_accuracy']:.4f}"
        )
        details = {"per_label": m["per_label"], "thresholds": m["thresholds"]}
    else:
        m = regression_metrics(logits, targets, data.target_scale)
        scores = {f"val_{k}": v for k, v in m.items()}
        text = f"val_mae {m['mae']:.4g} rmse {m['rmse']:.4g} r2 {m['r2']:.4f} spearman {m['spearman']:.4f}"
        details = {}
    return Validation(result["loss"], scores, details, (logits, targets), text)
