"""Classify image files with pretrained or fine-tuned weights and name the classes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError

from .errors import TransferkitError
from .loading import load_pretrained
from .models import create_model
from .weights import Preprocessing, get_weights

__all__ = ["Predictor", "load_predictor", "read_image"]


def read_image(path: str | Path) -> Image.Image:
    """An RGB PIL image; unreadable files raise :class:`TransferkitError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise TransferkitError(f"Image '{path}' does not exist.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise TransferkitError(f"Cannot read image '{path}': {e}") from None


@dataclass
class Predictor:
    """A model in eval mode with the preprocessing and class names it needs."""

    model: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]

    @torch.no_grad()
    def predict(self, images: list[str | Path], *, top_k: int = 5) -> list[dict]:
        """Top-k classes with probabilities for each image file."""
        transform = self.preprocessing.transform()
        batch = torch.stack([transform(read_image(p)) for p in images])  # (N, C, H, W)
        param = next(self.model.parameters())
        probs = self.model(batch.to(param.device, param.dtype)).float().softmax(-1)
        k = min(top_k, probs.shape[-1])
        values, indices = probs.topk(k, dim=-1)
        return [
            {
                "image": str(path),
                "top": [
                    {"index": int(i), "label": self.class_names[int(i)], "probability": float(v)}
                    for v, i in zip(vals, idxs)
                ],
            }
            for path, vals, idxs in zip(images, values, indices)
        ]


def load_predictor(source: str, *, model: str | None = None) -> Predictor:
    """A predictor from registry weights (``lite0``): their architecture, preprocessing and classes.

    Args:
        model: build this MODEL instead of the record's architecture (it must fit the tensors).
    """
    record = get_weights(source)
    net = create_model(model or record.architecture)
    load_pretrained(net, record.name)
    net.eval()
    return Predictor(net, record.preprocessing, record.class_names())
