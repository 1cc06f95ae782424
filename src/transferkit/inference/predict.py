"""Predict for image files with pretrained or fine-tuned weights: classes, the labels that apply, or a number."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..data.images import read_pixels
from ..data.preprocess import BatchPrep, Preprocessing, to_uint8_tensor
from ..data.sources import printable
from ..errors import DataError, ImageReadError
from ..runtime.fastpath import FastPath, autocast
from ..tasks.calibration import calibrated_thresholds, label_probabilities
from ..tasks.objective import TargetScale
from ..train.folder.calibration import probability_kind
from ..train.phases.loop import tta_logits, tta_warning
from .onnx_model import is_onnx, load_onnx
from .pretrained import load_weights_model
from .runs import load_trained

__all__ = ["Predictor", "from_trained", "load_predictor"]


@dataclass
class Predictor:
    """A model in eval mode with the preprocessing and class names it needs."""

    model: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]
    fast: FastPath = field(default_factory=lambda: FastPath(False, "fp32", "default"))
    batch_size: int | None = None  # None: the batch size measured fastest for inference
    notes: list[str] = field(default_factory=list)
    tta: bool = False  # average each image with its mirror image (not for digits or text)
    temperature: float | list[float] | None = None  # logits are divided by it (per label): calibrated probabilities
    task: str = "classification"  # or multi-label, regression
    thresholds: list[float] | None = None  # multi-label: per label, the probability above which it applies
    target_scale: TargetScale | None = None  # regression: the output's units
    interval: dict | None = None  # regression: the split-conformal interval around each value
    probabilities: str | None = None  # which they are, in words (calibrated or not); None for numbers

    @torch.no_grad()
    def predict(self, images: list[str | Path], *, top_k: int = 5) -> list[dict]:
        """Top-k classes with probabilities for each image file, read and run a batch at a time.

        Several labels per image: ``labels``, those whose probability reaches their threshold (most
        probable first), and ``all``, every label. A number: ``value`` in the target's units, with
        ``interval`` (low, high) and its ``level`` when the run has one.

        An image that cannot be read gets ``{"image": name, "error": reason}`` instead; when
        none can be read, a :class:`~transferkit.errors.DataError` is raised.
        """
        pre = self.preprocessing
        mode = pre.image_mode
        results: list[dict | None] = [None] * len(images)
        readable = []
        for index, path in enumerate(images):
            try:
                readable.append((index, to_uint8_tensor(read_pixels(path, mode=mode), pre)))
            except ImageReadError as e:
                results[index] = {"image": printable(path), "error": printable(e)}
        if not readable:
            raise DataError(f"None of the {len(images)} images could be read: {results[0]['error']}")
        index = [i for i, _ in readable]
        outputs = self.predict_tensors(
            [tensor for _, tensor in readable], [printable(images[i]) for i in index], top_k=top_k
        )
        for i, output in zip(index, outputs):
            results[i] = output
        return results

    @torch.no_grad()
    def predict_tensors(
        self, images: list[torch.Tensor] | torch.Tensor, names: list[str], *, top_k: int = 5, normalised: bool = False
    ) -> list[dict]:
        """What :meth:`predict` gives, for images already at the preprocessing's size: uint8 (C, H, W) each, or
        with ``normalised`` the model's float input as it is."""
        param = next(self.model.parameters())
        channels_last = self.fast.channels_last
        prep = (
            _AsGiven(param.device, channels_last)
            if normalised
            else BatchPrep(self.preprocessing, param.device, channels_last=channels_last)
        )
        step = self.batch_size or self.fast.inference_batch_size
        results = []
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            batch = chunk if isinstance(chunk, torch.Tensor) else torch.stack(list(chunk))  # (N, C, H, W)
            with autocast(param.device, self.fast.precision):
                logits = tta_logits(self.model, prep(batch).to(param.dtype), tta=self.tta).float()
            chunk_names = names[start : start + step]
            if self.task != "classification":
                results += [{"image": name, **self._outputs(row)} for name, row in zip(chunk_names, logits)]
                continue
            probs = (logits / (self.temperature or 1.0)).softmax(-1)
            values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            for name, vals, idxs in zip(chunk_names, values, indices):
                results.append(
                    {
                        "image": name,
                        "top": [
                            {"index": int(i), "label": self.class_names[int(i)], "probability": float(v)}
                            for v, i in zip(vals, idxs)
                        ],
                    }
                )
        return results

    def _outputs(self, logits: torch.Tensor) -> dict:
        """One image's labels that apply (multi-label) or value and interval (regression)."""
        if self.task == "regression":
            value = float(self.target_scale.restore(logits[None])[0])
            if self.interval is None:
                return {"value": value}
            width = self.interval["half_width"]
            return {"value": value, "interval": [value - width, value + width], "level": self.interval["level"]}
        temperatures = self.temperature if isinstance(self.temperature, list) else None
        probabilities = label_probabilities(logits[None], temperatures)[0].tolist()
        thresholds = calibrated_thresholds(self.thresholds or [0.5] * len(probabilities), temperatures)
        every = [
            {"index": k, "label": name, "probability": p, "threshold": t}
            for k, (name, p, t) in enumerate(zip(self.class_names, probabilities, thresholds))
        ]
        applies = sorted((e for e in every if e["probability"] >= e["threshold"]), key=lambda e: -e["probability"])
        return {"labels": applies, "all": every}


class _AsGiven:
    """Float model inputs onto the device in the chosen memory format, otherwise as they are."""

    def __init__(self, device: torch.device, channels_last: bool):
        self.device, self.channels_last = device, channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def from_trained(trained, *, batch_size: int | None = None, uncalibrated: bool = False) -> Predictor:
    """The predictor of a finished run's model (:func:`~transferkit.inference.runs.load_trained`, or an export's)."""
    predictor = Predictor(
        trained.model, trained.preprocessing, trained.class_names, trained.fast, batch_size, list(trained.notes)
    )
    predictor.temperature = None if uncalibrated else trained.temperature
    predictor.task, predictor.thresholds = trained.task, trained.thresholds
    predictor.target_scale, predictor.interval = trained.target_scale, trained.interval
    if trained.task != "regression":
        predictor.probabilities = probability_kind(trained.temperature, asked_raw=uncalibrated)
    return predictor


def load_predictor(
    source: str,
    *,
    model: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    trust_code: bool = False,
    tta: bool = False,
    uncalibrated: bool = False,
) -> Predictor:
    """A predictor from a run folder (its best checkpoint), an exported ``.onnx`` with its sidecar
    (run by onnxruntime), registry weights (``lite0``), a checkpoint file or any weights spec
    (``timm:a1_in1k`` with ``model``). Probabilities are calibrated by the temperature a run or
    export carries.

    Args:
        model: the MODEL to build for weights (see :func:`~transferkit.inference.pretrained.load_weights_model`).
            Class names are ImageNet's when the head is an ImageNet head, else the class indices.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        batch_size: images per forward pass (default: the run's measured inference batch size).
        trust_code: let a run whose MODEL is the user's code import it (see :func:`load_trained`).
        tta: average each image with its mirror image (a note says when the classes are digits).
        uncalibrated: the softmax of the raw logits, ignoring the temperature a run or export carries.
    """
    if Path(source).is_dir() or is_onnx(source):
        trained = load_onnx(source, device=device) if is_onnx(source) else None
        trained = trained or load_trained(source, device=device, trust_code=trust_code)
        predictor = from_trained(trained, batch_size=batch_size, uncalibrated=uncalibrated)
    else:
        loaded = load_weights_model(source, model=model, device=device)
        predictor = Predictor(
            loaded.model, loaded.preprocessing, loaded.class_names, batch_size=batch_size, notes=loaded.notes
        )
        predictor.probabilities = "uncalibrated: the softmax of the logits (pretrained weights keep no temperature)"
    predictor.tta = tta
    warning = tta_warning(predictor.class_names) if tta else None
    if warning:
        predictor.notes.append(warning)
    return predictor
