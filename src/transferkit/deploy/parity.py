"""The proof an export carries: the trained model and the export run on the same held-out images, compared."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..adapters.lora import copy_model
from ..data.decode import decode
from ..data.preprocess import BatchPrep, Preprocessing
from ..data.sources import stratified_sample
from ..errors import DataError, ParityError
from ..inference.runs import held_out_items, load_trained
from ..inference.trained import TrainedModel
from ..tasks.metrics import multilabel_metrics

__all__ = [
    "FP32_TOLERANCE",
    "INT8_MAX_DROP",
    "PARITY_IMAGES",
    "Proof",
    "int8_cost",
    "as_images",
    "compare_outputs",
    "held_out_images",
    "outputs_of",
    "run_validation",
    "trained_for_export",
]

PARITY_IMAGES = 300  # held-out images the proof runs on (all when fewer)
FP32_TOLERANCE = 1e-3
INT8_MAX_DROP = 1.0  # accuracy (or mAP) points on the held-out images
INT8_MAX_MAE_INCREASE = 2.0  # percent more mean absolute error on the held-out images, for numbers


def trained_for_export(run: Path, trust_code: bool, module: nn.Module | None):
    """The run's best model on the CPU; for a run of a module given from Python, a copy of it (the export's
    merging and moving leave the user's module as it is)."""
    return load_trained(run, device="cpu", trust_code=trust_code, model=None if module is None else copy_model(module))


def held_out_images(trained, data: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Up to :data:`PARITY_IMAGES` held-out uint8 images (N, C, H, W) and their labels."""
    spec = data or trained.config.data
    try:
        items, split = held_out_items(trained, spec)
    except DataError as e:
        raise DataError(
            f"The parity proof needs the run's held-out images, and its DATA cannot be opened ({e}); "
            "pass data (the same DATA where it is now).",
            argument="data",
        ) from None
    if not items:
        raise DataError(f"'{spec}' has no held-out images of the run's classes to prove the export on.")
    if len(items) > PARITY_IMAGES:  # a sample in DATA's order would be one class or two
        seed = trained.config.seed
        try:
            items = stratified_sample(items, PARITY_IMAGES, seed=seed)
        except DataError:  # more classes than the sample holds
            items = random.Random(seed).sample(items, PARITY_IMAGES)
        split = f"{split} (a sample of {PARITY_IMAGES}, stratified by class, seed {seed})"
    decoded = decode(items, trained.preprocessing)
    return as_images(decoded.images), decoded.labels, split


def run_validation(trained) -> dict | None:
    """The score training gave the exported checkpoint on all its held-out images, beside the proof's sample."""
    row = (trained.validated or {}).get("row")
    if not row:
        return None
    scores = {k: v for k, v in row.items() if k.startswith("val_") and k != "val_loss" and isinstance(v, int | float)}
    return {"epoch": row.get("epoch"), **scores}


def as_images(images) -> torch.Tensor:
    """Decoded images as one (N, C, H, W) uint8 tensor, also when they were streamed."""
    return images if isinstance(images, torch.Tensor) else torch.stack(list(images))


@torch.no_grad()
def outputs_of(forward, images: torch.Tensor, pre: Preprocessing, *, uint8: bool, batch: int = 32) -> torch.Tensor:
    prep = BatchPrep(pre, torch.device("cpu"), channels_last=False)
    chunks = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        x = chunk.permute(0, 2, 3, 1).contiguous() if uint8 else prep(chunk)
        chunks.append(torch.as_tensor(forward(x)).float())
    return torch.cat(chunks)


def compare_outputs(reference: torch.Tensor, got: torch.Tensor, labels: torch.Tensor, trained) -> dict:
    """How far the export's outputs are from the model's, and what that changes: the top class, each label's
    decision at its threshold, or the value in the target's units."""
    diff = (reference - got).abs()
    facts = {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "scale": float(reference.abs().max()),
    }
    if trained.task == "multi-label":
        thresholds = torch.tensor(trained.thresholds)
        decided = [torch.sigmoid(out) >= thresholds for out in (reference, got)]
        scores = [multilabel_metrics(out, labels, trained.class_names)["map"] for out in (reference, got)]
        return {
            **facts,
            "decision_agreement": float((decided[0] == decided[1]).double().mean()),
            "reference_map": scores[0],
            "map": scores[1],
        }
    if trained.task == "regression":
        values = [trained.target_scale.restore(out) for out in (reference, got)]
        errors = [float((v - labels.float()).abs().mean()) for v in values]
        return {
            **facts,
            "value_max_abs_diff": float((values[0] - values[1]).abs().max()),
            "reference_mae": errors[0],
            "mae": errors[1],
        }
    return {
        **facts,
        "top1_agreement": float((reference.argmax(1) == got.argmax(1)).double().mean()),
        "reference_accuracy": float((reference.argmax(1) == labels).double().mean()),
        "accuracy": float((got.argmax(1) == labels).double().mean()),
    }


def int8_cost(parity: dict, task: str) -> tuple[float, float, str]:
    """What int8 costs on the held-out images (recorded in ``parity``), its limit, and the cost's unit."""
    if task == "regression":  # relative: an error in the target's units has no natural scale
        parity["mae_increase"] = 100 * (parity["mae"] / max(parity["reference_mae"], 1e-12) - 1)
        parity["max_mae_increase"] = INT8_MAX_MAE_INCREASE
        return parity["mae_increase"], INT8_MAX_MAE_INCREASE, "percent more mean absolute error"
    name = "map" if task == "multi-label" else "accuracy"
    parity[f"{name}_drop"] = 100 * (parity[f"reference_{name}"] - parity[name])
    parity[f"max_{name}_drop"] = INT8_MAX_DROP
    return parity[f"{name}_drop"], INT8_MAX_DROP, f"{'mAP' if name == 'map' else 'accuracy'} points"


@dataclass
class Proof:
    """The held-out images an export must reproduce the model's outputs on, and those outputs."""

    images: torch.Tensor
    labels: torch.Tensor
    split: str
    reference: torch.Tensor
    trained: TrainedModel
    uint8: bool

    def _compared(self, runner) -> dict:
        got = outputs_of(runner, self.images, self.trained.preprocessing, uint8=self.uint8)
        parity = compare_outputs(self.reference, got, self.labels, self.trained)
        parity.update(images=len(self.images), split=self.split)
        return parity

    def check(self, format: str, runner) -> dict:
        """The fp32 export's parity, refused beyond :data:`FP32_TOLERANCE` of the outputs' scale."""
        parity = self._compared(runner)
        parity.update(tolerance=FP32_TOLERANCE, precision="fp32", run_validation=run_validation(self.trained))
        if parity["max_abs_diff"] > FP32_TOLERANCE * max(1.0, parity["scale"]):
            agreeing = next(k for k in ("top1_agreement", "decision_agreement", "value_max_abs_diff") if k in parity)
            raise ParityError(
                f"The {format} export computes something else: outputs differ by up to {parity['max_abs_diff']:.3g} "
                f"(tolerance {FP32_TOLERANCE:g} of {max(1.0, parity['scale']):.3g}), {agreeing} "
                f"{parity[agreeing]:.3g} on {len(self.images)} held-out images; nothing was written."
            )
        return parity

    def check_int8(self, quantize: str, runner, *, fp32: dict) -> dict:
        """The int8 export's parity, refused where it costs more than the task's limit."""
        parity = self._compared(runner)
        parity.update(precision=f"int8 ({quantize})", fp32=fp32)
        cost, limit, what = int8_cost(parity, self.trained.task)
        if cost > limit:
            error = ParityError(
                f"{quantize} int8 quantisation costs {cost:.2f} {what} on {len(self.images)} held-out images "
                f"(limit {limit:g}); nothing was written. Keep the fp32 export, or try the other quantize mode."
            )
            error.parity = parity
            raise error
        return parity
