"""``eval`` of a run that predicts several labels per image or a number: the task's metrics on some images.

The metrics are the ones training validated with (:mod:`transferkit.tasks.metrics`). For numbers
with an interval, the share of images whose true value falls inside it is reported too: about
the interval's level on images like the validation images.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from ..data.decode import ImageDataset, decode, loader_workers
from ..data.preprocess import BatchPrep
from ..tasks.metrics import multilabel_metrics, regression_metrics
from ..tasks.objective import loss_function
from ..train.loop import evaluate_outputs
from .trained import TrainedModel

__all__ = ["evaluate_task"]


def evaluate_task(trained: TrainedModel, items: list, *, spill: Path | None, batch_size: int | None) -> dict:
    """Loss and metrics of ``trained`` on ``items``, with the checkpoint's validation scores beside them."""
    decoded = decode(items, trained.preprocessing, spill_dir=spill)
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
    out = {"task": trained.task, "images": result["count"], "loss": result["loss"]}
    if trained.task == "multi-label":
        out.update(multilabel_metrics(logits, targets, trained.class_names))
        headline = "map"
    else:
        out.update(regression_metrics(logits, targets, trained.target_scale))
        headline = "mae"
        if trained.interval is not None:
            residuals = (trained.target_scale.restore(logits) - targets.float()).abs()
            out["interval"] = {
                **trained.interval,
                "coverage": float((residuals <= trained.interval["half_width"]).float().mean()),
            }
    if trained.validated is not None:
        row = trained.validated["row"]
        out["validation"] = {"epoch": row["epoch"], f"val_{headline}": row.get(f"val_{headline}")}
    out["skipped_images"] = [{"name": n, "reason": r} for n, r in decoded.skipped]
    return out
