"""Preprocessing as data, and the one pipeline that applies it for training, evaluation and prediction.

Policy: an image becomes what timm's evaluation transform (``timm.data.create_transform`` of
``resolve_model_data_config``) makes of it, step for step and with timm's rounding, so that the
weights see the pixels they were evaluated with:

- ``center``: the short side resized to ``floor(size / crop_pct)`` (the long side truncated, as
  torchvision's ``Resize``), then the centre ``size`` taken;
- ``squash``: both sides resized to ``floor(size / crop_pct)`` whatever the aspect ratio, then the
  centre taken (nothing is lost at ``crop_pct`` 1.0);
- ``border``: the long side resized to ``floor(size / crop_pct)``, then padded to the size with the
  mean colour (nothing is lost, nothing is stretched).

Resizing runs once per image in torch's uint8 kernels (antialiased bilinear and bicubic, as PIL's and
within one grey level of them); normalisation runs per batch on the device (:class:`BatchPrep`).

transformers' image processors resize and crop the same ways, with two differences of their own that
are kept so that their weights too see what they expect: the centre crop's offset is truncated
(``crop_offset="floor"``, where torchvision rounds), and some flip the channels to BGR (MobileViT's
``do_flip_channel_order``, ``channel_order="BGR"``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

__all__ = [
    "APPLIED",
    "CROP_MODES",
    "INTERPOLATIONS",
    "BatchPrep",
    "EvalTransform",
    "Preprocessing",
    "center_crop_or_pad",
    "crop_pct_of",
    "input_size_of",
    "legacy_note",
    "resize_crop",
    "resized_size",
    "to_uint8_tensor",
    "torchvision_data_config",
]

CROP_MODES = ("center", "squash", "border")
CROP_OFFSETS = ("round", "floor")  # torchvision's and timm's centre crop, transformers' image processors'
CHANNEL_ORDERS = ("RGB", "BGR")
# Resampling filters by name; torch has uint8 kernels for the first three, PIL resizes the others.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
_PIL_FILTERS = {"lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
# A run folder or sidecar written since crop modes are applied carries this key in its preprocessing;
# earlier ones were resized and centre-cropped whatever their crop_mode said.
APPLIED = "crop_mode_applied"


DEFAULT_INPUT_SIZE = (3, 224, 224)  # timm's, for a network that names none


def input_size_of(model: nn.Module) -> tuple[int, int, int]:
    """The (C, H, W) input the model expects: the size it was built for, timm's config, else 224 px."""
    channels = _first_conv_channels(model)
    size = getattr(model, "transferkit_input_size", None)  # the size it was built for (create_model's image_size)
    if size is not None:
        return (channels or size[0], *tuple(size)[1:])
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        size = tuple(cfg["input_size"])
        return (channels or size[0], *size[1:])
    return (channels or DEFAULT_INPUT_SIZE[0], *DEFAULT_INPUT_SIZE[1:])


def _first_conv_channels(model: nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


@dataclass(frozen=True)
class Preprocessing:
    """What an image must become before the weights see it: timm's data configuration."""

    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    crop_offset: str = "round"
    channel_order: str = "RGB"

    def __post_init__(self):
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode '{self.crop_mode}' is not one of {', '.join(CROP_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation '{self.interpolation}' is not one of {', '.join(INTERPOLATIONS)}")
        if self.crop_offset not in CROP_OFFSETS:
            raise ValueError(f"crop_offset '{self.crop_offset}' is not one of {', '.join(CROP_OFFSETS)}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order '{self.channel_order}' is not one of {', '.join(CHANNEL_ORDERS)}")
        if not (isinstance(self.crop_pct, int | float) and 0 < self.crop_pct < 10):
            raise ValueError(f"crop_pct {self.crop_pct!r} is not a fraction above 0")

    @classmethod
    def from_config(cls, cfg: dict, *, input_size: tuple[int, int, int] | None = None) -> Preprocessing:
        """From a timm pretrained configuration, with timm's defaults for what it leaves out
        (``resolve_data_config``: bicubic, crop 0.875, centre, ImageNet's mean and std). Beside timm's keys,
        ``crop_offset`` and ``channel_order`` carry what a transformers image processor does differently."""
        from timm.data import resolve_data_config

        args = {"input_size": tuple(input_size)} if input_size else {"in_chans": 3}
        data = resolve_data_config(args=args, pretrained_cfg=dict(cfg))
        return cls(
            tuple(int(v) for v in data["input_size"]),
            tuple(float(v) for v in data["mean"]),
            tuple(float(v) for v in data["std"]),
            data["interpolation"],
            float(data["crop_pct"]),
            data["crop_mode"],
            cfg.get("crop_offset", "round"),
            cfg.get("channel_order", "RGB"),
        )

    @classmethod
    def from_model(cls, model: nn.Module) -> Preprocessing:
        """timm's reading of a model's configuration (``resolve_data_config``, as ``resolve_model_data_config``
        reads a model) at the size it was built for: a timm model's ``pretrained_cfg``, a torchvision
        architecture's default weights' transforms (``transferkit_data_config``), timm's defaults for any other
        network."""
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "transferkit_data_config", None) or {}
        return cls.from_config(cfg, input_size=tuple(input_size_of(model)))

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        """The inverse of :meth:`to_dict`, as a run checkpoint or an export sidecar stores it.

        One stored before crop modes were applied was resized and centre-cropped whatever its
        ``crop_mode`` said; it is read as ``center``, which is what its weights were trained on
        (:func:`legacy_note` says so).
        """
        applied = values.get(APPLIED, False)
        return cls(
            tuple(values["input_size"]),
            tuple(values["mean"]),
            tuple(values["std"]),
            values["interpolation"],
            values["crop_pct"],
            values.get("crop_mode", "center") if applied else "center",
            values.get("crop_offset", "round"),
            values.get("channel_order", "RGB"),
        )

    @property
    def image_mode(self) -> str:
        """The PIL mode images are read in for this input: ``RGB`` for three channels, ``L`` (grey) otherwise."""
        return "RGB" if self.input_size[0] == 3 else "L"

    @property
    def size_text(self) -> str:
        """The input size for a log line: ``224 px``, or ``1024x768 px`` when it is not square."""
        h, w = self.input_size[1:]
        return f"{h} px" if h == w else f"{h}x{w} px"

    def to_dict(self) -> dict:
        """For a run checkpoint or a sidecar: the fields, marked as applied with their crop mode."""
        return {**asdict(self), APPLIED: True}


def torchvision_data_config(transforms) -> dict:
    """timm's configuration keys for torchvision's ``ImageClassification`` transforms of a weights enum."""
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    return {
        "input_size": (3, crop, crop),
        "mean": tuple(transforms.mean),
        "std": tuple(transforms.std),
        "interpolation": transforms.interpolation.value,
        "crop_pct": crop_pct_of(crop, resize),
        "crop_mode": "center",
    }


def crop_pct_of(crop: int, resized: int) -> float:
    """The ``crop_pct`` for a crop of ``crop`` px out of ``resized`` px, as the resize rule reads it back:
    ``crop / resized`` nudged down by a float's last bits where ``floor(crop / crop_pct)`` would give
    ``resized - 1`` (384 / (384 / 450) is 449.99999999999994)."""
    pct = crop / resized
    while math.floor(crop / pct) < resized:
        pct = math.nextafter(pct, 0.0)
    return pct


def legacy_note(values: dict) -> str | None:
    """What a stored preprocessing from before crop modes were applied keeps, or None for a current one."""
    if values.get(APPLIED) or values.get("crop_mode", "center") == "center":
        return None
    return (
        f"preprocessing recorded before crop modes were applied: its crop_mode '{values.get('crop_mode')}' was not "
        "used in training, so the images are resized and centre-cropped as they were then"
    )


def resized_size(height: int, width: int, pre: Preprocessing) -> tuple[int, int]:
    """The (H, W) an image of ``height`` x ``width`` is resized to before the crop or pad, by timm's rules."""
    target_h, target_w = pre.input_size[1:]
    scale_h, scale_w = math.floor(target_h / pre.crop_pct), math.floor(target_w / pre.crop_pct)
    if pre.crop_mode == "squash":
        return scale_h, scale_w
    if pre.crop_mode == "center" and scale_h == scale_w:  # torchvision's Resize(int): the short side
        short, long = min(height, width), max(height, width)
        new_long = int(scale_h * long / short)
        return (scale_h, new_long) if height <= width else (new_long, scale_h)
    # timm's ResizeKeepRatio: the short side to its target (center), or the long side (border)
    ratios = (height / scale_h, width / scale_w)
    ratio = max(ratios) if pre.crop_mode == "border" else min(ratios)
    return round(height / ratio), round(width / ratio)


def resize(image: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """(C, H, W) uint8 resized to ``size``, antialiased as PIL resizes."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if interpolation in _PIL_FILTERS:  # no torch kernel: PIL's own, one channel at a time
        planes = [Image.fromarray(c.numpy()).resize(size[::-1], _PIL_FILTERS[interpolation]) for c in image]
        return torch.from_numpy(np.stack([np.asarray(p) for p in planes]))
    if interpolation == "nearest":
        return F.interpolate(image[None], size=size, mode="nearest-exact")[0]  # PIL's nearest pixel centres
    mode = "bilinear" if interpolation == "bilinear" else "bicubic"
    return F.interpolate(image[None], size=size, mode=mode, antialias=True)[0]


def center_crop_or_pad(
    image: torch.Tensor, size: tuple[int, int], fill: tuple[int, ...] | int = 0, *, offset: str = "round"
) -> torch.Tensor:
    """The centre ``size`` of (C, H, W) ``image``, padded with ``fill`` where it is smaller (torchvision's
    ``CenterCrop`` and timm's ``CenterCropOrPad``; with ``offset="floor"``, transformers' ``center_crop``)."""
    crop_h, crop_w = size
    height, width = image.shape[-2:]
    if crop_h > height or crop_w > width:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        padded = image.new_empty((image.shape[0], height + pad_h, width + pad_w))
        padded[:] = torch.as_tensor(fill, dtype=image.dtype).reshape(-1, 1, 1)
        top, left = pad_h // 2, pad_w // 2
        padded[:, top : top + height, left : left + width] = image
        image, (height, width) = padded, padded.shape[-2:]
    place = round if offset == "round" else math.floor
    top, left = int(place((height - crop_h) / 2.0)), int(place((width - crop_w) / 2.0))
    return image[:, top : top + crop_h, left : left + crop_w]


def resize_crop(image: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """(C, H, W) uint8 resized and cropped (or padded) to ``pre.input_size``'s (H, W) by its crop mode."""
    image = resize(image, resized_size(*image.shape[-2:], pre), pre.interpolation)
    channels = pre.input_size[0]
    if image.shape[0] == 1 and channels != 1:  # a grey image for a colour model: one plane, shared
        image = image.expand(channels, -1, -1)
    mean = pre.mean[::-1] if pre.channel_order == "BGR" else pre.mean  # the image is still RGB here
    fill = tuple(round(255 * v) for v in mean[: image.shape[0]]) if pre.crop_mode == "border" else 0
    return center_crop_or_pad(image, tuple(pre.input_size[1:]), fill, offset=pre.crop_offset)


def to_uint8_tensor(image: Image.Image | torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """An image (PIL, or (C, H, W) uint8) as a contiguous (C, H, W) uint8 tensor at the preprocessing's size."""
    if isinstance(image, Image.Image):
        image = pil_to_tensor(image)
    out = resize_crop(image, pre)  # a grey image already shared across the model's channels
    if pre.channel_order == "BGR" and out.shape[0] == 3:
        out = out.flip(0)
    return out.contiguous()


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


class EvalTransform:
    """A model's evaluation preprocessing as one callable, as timm's ``create_transform`` gives it: an image
    (PIL, a (C, H, W) uint8 tensor or an (H, W, C) uint8 array) in, the normalised float (C, H, W) tensor
    the model is fed out.

    Examples:
        >>> t = EvalTransform(Preprocessing((3, 224, 224), (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0, "squash"))
        >>> t(torch.zeros(3, 300, 500, dtype=torch.uint8)).shape
        torch.Size([3, 224, 224])
    """

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        self._prep = BatchPrep(preprocessing, torch.device("cpu"), channels_last=False)

    def __call__(self, image) -> torch.Tensor:
        return self._prep(self.uint8(image)[None])[0]

    def uint8(self, image) -> torch.Tensor:
        """The resized and cropped (C, H, W) uint8 image, before normalisation."""
        if isinstance(image, Image.Image):
            image = pil_to_tensor(image.convert(self.preprocessing.image_mode))
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise TypeError(
                    f"image: an array must be (H, W) or (H, W, C) uint8; got {image.dtype} of shape {image.shape}."
                )
            # a copy: the array may be read-only (PIL's)
            image = torch.from_numpy(np.array(image[..., None] if image.ndim == 2 else image))
            image = image.permute(2, 0, 1)
        elif isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3, 4):
                raise TypeError(
                    f"image: a tensor must be (C, H, W) uint8 with 1 or 3 channels; got {image.dtype} of shape "
                    f"{tuple(image.shape)}. Scale floats in [0, 1] by 255 and convert with .to(torch.uint8)."
                )
        else:
            raise TypeError(
                f"image must be a PIL image, a (C, H, W) uint8 tensor or an (H, W, C) uint8 array; got "
                f"{type(image).__name__}."
            )
        if image.shape[0] == 4:  # RGBA: the colour planes, as PIL's convert("RGB") keeps them
            image = image[:3]
        return to_uint8_tensor(image, self.preprocessing)

    def __repr__(self) -> str:
        pre = self.preprocessing
        h, w = pre.input_size[1:]
        scale_h, scale_w = math.floor(h / pre.crop_pct), math.floor(w / pre.crop_pct)
        step = {
            "center": f"resize the short side to {scale_h} px, centre crop {h}x{w}",
            "squash": f"resize to {scale_h}x{scale_w} px whatever the aspect ratio (squash), centre crop {h}x{w}",
            "border": f"resize the long side to {scale_h} px, pad to {h}x{w} with the mean colour",
        }[pre.crop_mode]
        mean = ", ".join(f"{v:.4g}" for v in pre.mean)
        std = ", ".join(f"{v:.4g}" for v in pre.std)
        flip = ", channels to BGR" if pre.channel_order == "BGR" else ""
        return (
            f"EvalTransform(\n  {step} ({pre.interpolation}, crop_pct {pre.crop_pct:g}){flip},\n"
            f"  to float in [0, 1], normalise mean ({mean}) std ({std})\n)"
        )
