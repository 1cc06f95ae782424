"""Classify image files with pretrained or fine-tuned weights and name the classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..data.images import read_image
from ..data.preprocess import BatchPrep, Preprocessing, to_uint8_tensor
from ..model.factory import create_model
from ..train.fastpath import FastPath, autocast, resolve_device
from ..weights.loading import load_pretrained
from ..weights.registry import get_weights
from .runs import load_trained

__all__ = ["Predictor", "load_predictor"]


@dataclass
class Predictor:
    """A model in eval mode with the preprocessing and class names it needs."""

    model: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]
    fast: FastPath = field(default_factory=lambda: FastPath(False, "fp32", "default"))
    batch_size: int | None = None  # None: the batch size measured fastest for inference

    @torch.no_grad()
    def predict(self, images: list[str | Path], *, top_k: int = 5) -> list[dict]:
        """Top-k classes with probabilities for each image file, read and run a batch at a time."""
        pre = self.preprocessing
        mode = "RGB" if pre.input_size[0] == 3 else "L"
        param = next(self.model.parameters())
        prep = BatchPrep(pre, param.device, channels_last=self.fast.channels_last)
        step = self.batch_size or self.fast.inference_batch_size
        results = []
        for start in range(0, len(images), step):
            paths = images[start : start + step]
            batch = torch.stack([to_uint8_tensor(read_image(p, mode=mode), pre) for p in paths])  # (N, C, H, W)
            with autocast(param.device, self.fast.precision):
                probs = self.model(prep(batch).to(param.dtype)).float().softmax(-1)
            values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            results += [
                {
                    "image": str(path),
                    "top": [
                        {"index": int(i), "label": self.class_names[int(i)], "probability": float(v)}
                        for v, i in zip(vals, idxs)
                    ],
                }
                for path, vals, idxs in zip(paths, values, indices)
            ]
        return results


def load_predictor(
    source: str,
    *,
    architecture: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
) -> Predictor:
    """A predictor from a run folder (its best checkpoint) or registry weights (``lite0``).

    Args:
        architecture: for registry weights, build this MODEL instead of the record's architecture.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        batch_size: images per forward pass (default: the run's measured inference batch size).
    """
    if Path(source).is_dir():
        trained = load_trained(source, device=device)
        return Predictor(trained.model, trained.preprocessing, trained.class_names, trained.fast, batch_size)
    record = get_weights(source)
    net = create_model(architecture or record.architecture)
    load_pretrained(net, record.name)
    net.to(resolve_device(device)).eval()
    return Predictor(net, record.preprocessing, record.class_names(), batch_size=batch_size)
