"""A transformers image processor read as timm's data configuration, so that one pipeline applies it.

transformers loads the processor from ``preprocessor_config.json`` (its class's defaults fill in what the
file leaves out; a processor that needs the repository's own code is refused), and its settings are
translated, not re-guessed:

- ``size`` ``{height, width}`` resizes to that size whatever the aspect ratio: timm's ``squash``;
  ``{shortest_edge}`` resizes the short side: timm's ``center``;
- ``crop_size`` with ``do_center_crop`` crops the centre, ``crop_pct`` being what the resize leaves of it;
  ConvNeXt's ``crop_pct`` (below 384 px), PoolFormer's and LeViT's ``256 / 224`` are their classes' own rules;
- ``do_rescale``, ``rescale_factor``, ``do_normalize``, the means and deviations (EfficientNet's offset and
  second division included) fold into one mean and deviation in 0-1 units;
- ``do_flip_channel_order`` (MobileViT) is ``channel_order="BGR"``; the centre crop's offset is truncated, as
  transformers' ``center_crop`` places it (``crop_offset="floor"``).

Processors whose output is no fixed-size image (ImageGPT's colour clusters, SigLIP 2's patch sequences)
are refused in one line.
"""

from __future__ import annotations

from pathlib import Path

from .._text import one_line
from ..data.preprocess import crop_pct_of
from ..errors import ModelSpecError

__all__ = ["RESAMPLE", "processor_config"]

RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}  # PIL's codes
_NOT_REPRODUCED = {
    "DonutImageProcessor": "shrinks document pages into its size and pads them with black (turning them to "
    "align their long side where asked)",
}
_NOT_IMAGES = {
    "ImageGPTImageProcessor": "colour-cluster tokens",
    "Siglip2ImageProcessor": "patch sequences of varying length",
}


def processor_config(folder: Path, *, channels: int = 3) -> dict:
    """timm's pretrained-configuration keys (with ``crop_offset`` and ``channel_order``) for the image processor
    whose ``preprocessor_config.json`` is in ``folder``."""
    processor = _load(folder)
    name = type(processor).__name__.removesuffix("Pil")  # both backends hold the same settings
    if name in _NOT_IMAGES:
        raise ModelSpecError(
            f"{name} turns images into {_NOT_IMAGES[name]}, not the fixed-size images transferkit feeds; "
            "this model cannot be fine-tuned here."
        )
    if name in _NOT_REPRODUCED:
        raise ModelSpecError(
            f"{name} {_NOT_REPRODUCED[name]}, which transferkit's preprocessing does not reproduce; to fine-tune this "
            "network on resized images, save a ViTImageProcessor with its size, mean and std in the folder."
        )
    if name == "TimmWrapperImageProcessor":  # timm's own configuration, carried as it is
        return {**processor.data_config, "crop_offset": "round", "channel_order": "RGB"}
    input_size, crop_pct, crop_mode = _geometry(processor, name)
    # MobileViT flips where asked, PP-LCNet always; both after normalising, so the statistics follow the flip
    flip = getattr(processor, "do_flip_channel_order", False) or name == "PPLCNetImageProcessor"
    statistics = _statistics(processor, name, channels)
    if flip:
        statistics = {key: values[::-1] for key, values in statistics.items()}
    return {
        "input_size": (channels, *input_size),
        **statistics,
        "interpolation": RESAMPLE.get(int(processor.resample if processor.resample is not None else 2), "bilinear"),
        "crop_pct": crop_pct,
        "crop_mode": crop_mode,
        "crop_offset": "floor",
        "channel_order": "BGR" if flip else "RGB",
    }


def _load(folder: Path):
    from transformers import AutoImageProcessor
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as e:
        why = one_line(e, 200)
        raise ModelSpecError(f"transformers cannot read the image processor in '{folder}': {why}") from None
    finally:
        transformers_logging.set_verbosity(verbosity)


def _geometry(processor, name: str) -> tuple[tuple[int, int], float, str]:
    """(H, W) fed to the model, crop_pct and crop mode for the processor's resize and crop."""
    size = processor.size
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    if name == "PerceiverImageProcessor" and crop is not None:
        # the centre square of size / crop_size of the short side, then resized: the same region as resizing
        # the short side to size * crop_size / size first, up to where the filter's edge falls
        return (size.height, size.width), size.height / crop.height, "center"
    if name == "PPLCNetImageProcessor" and processor.resize_short:  # its short side, whatever size says
        short = processor.resize_short
        if crop is None:
            return (short, short), 1.0, "center"
        return (crop.height, crop.width), crop_pct_of(crop.height, short), "center"
    if size.shortest_edge:
        short = size.shortest_edge
        if name == "ConvNextImageProcessor" and crop is None:
            if short >= 384:  # ConvNeXt's processor warps large sizes to a square without a crop
                return (short, short), 1.0, "squash"
            return (short, short), crop_pct_of(short, int(short / processor.crop_pct)), "center"
        if name == "LevitImageProcessor":
            short = int((256 / 224) * short)
        elif name == "PoolFormerImageProcessor" and processor.crop_pct:
            short = int(short / processor.crop_pct)
        if crop is None:  # the short side alone: no fixed size; the square the crop mode takes of it
            return (short, short), 1.0, "center"
        return (crop.height, crop.width), crop_pct_of(crop.height, short), "center"
    if size.height and size.width:
        if name == "PoolFormerImageProcessor" and processor.crop_pct:
            size_h, size_w = int(size.height / processor.crop_pct), int(size.width / processor.crop_pct)
        else:
            size_h, size_w = size.height, size.width
        if crop is None:
            return (size_h, size_w), 1.0, "squash"
        return (crop.height, crop.width), crop_pct_of(crop.height, size_h), "squash"
    raise ModelSpecError(
        f"{name} resizes by {size} (no height and width, no shortest edge): transferkit feeds fixed-size images."
    )


def _statistics(processor, name: str, channels: int) -> dict:
    """One mean and deviation in 0-1 units for the processor's rescale, offset, normalisation and second division."""
    scale = processor.rescale_factor if processor.do_rescale else 1.0
    offset = 1.0 if processor.do_rescale and getattr(processor, "rescale_offset", False) else 0.0
    mean = _per_channel(processor.image_mean, channels) if processor.do_normalize else (0.0,) * channels
    std = _per_channel(processor.image_std, channels) if processor.do_normalize else (1.0,) * channels
    if name == "EfficientNetImageProcessor" and getattr(processor, "include_top", False):
        std = tuple(s * d for s, d in zip(std, _per_channel(processor.image_std, channels)))
    return {
        "mean": tuple((offset + m) / (scale * 255) for m in mean),
        "std": tuple(s / (scale * 255) for s in std),
    }


def _per_channel(values, channels: int) -> tuple[float, ...]:
    values = [values] if isinstance(values, int | float) else list(values)
    return tuple(float(v) for v in (values * channels if len(values) == 1 else values))
