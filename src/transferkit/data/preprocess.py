"""Preprocessing as data, and the one pipeline that applies it for training, evaluation and prediction.

Images are resized and centre-cropped once to uint8 (as timm's eval transform does), then
normalised per batch on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..model._trace import input_size_of
from .images import resize_center_crop

__all__ = ["BatchPrep", "Preprocessing", "to_uint8_tensor"]


@dataclass(frozen=True)
class Preprocessing:
    """What an image must become before the weights see it."""

    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        """The inverse of ``dataclasses.asdict``, as a run checkpoint or an export sidecar stores it."""
        return cls(
            tuple(values["input_size"]),
            tuple(values["mean"]),
            tuple(values["std"]),
            values["interpolation"],
            values["crop_pct"],
            values["crop_mode"],
        )

    @classmethod
    def from_model(cls, model: nn.Module) -> Preprocessing:
        """timm's recorded preprocessing for a model, or ImageNet defaults at the model's input size."""
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return cls(
            input_size=tuple(input_size_of(model)),
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            interpolation=cfg.get("interpolation", "bilinear"),
            crop_pct=cfg.get("crop_pct", 0.875),
            crop_mode=cfg.get("crop_mode", "center"),
        )


def to_uint8_tensor(img: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """A PIL image (already in the right mode) as a (C, H, W) uint8 tensor at the preprocessing's size."""
    channels, size = pre.input_size[0], pre.input_size[1]
    arr = resize_center_crop(img, size, crop_pct=pre.crop_pct, interpolation=pre.interpolation)
    return torch.from_numpy(np.array(arr).reshape(size, size, channels)).permute(
        2, 0, 1
    )  # copy: PIL memory is read-only


class BatchPrep:
    """uint8 images (N, C, H, W) to normalised float on the device, in the chosen memory format."""

    def __init__(self, pre: Preprocessing, device: torch.device, channels_last: bool):
        channels = pre.input_size[0]
        mean, std = pre.mean[:channels], pre.std[:channels]
        if channels != len(pre.mean):
            mean, std = (sum(pre.mean) / 3,) * channels, (sum(pre.std) / 3,) * channels
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.device = device
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.device, non_blocking=True).float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
