"""A run whose MODEL is a transformers model, as the folder ``AutoModelForImageClassification.from_pretrained``
loads: ``config.json`` (the run's classes as ``id2label``), ``model.safetensors``,
``preprocessor_config.json`` and the model card as ``README.md``.

transformers writes the model itself (``save_pretrained``). The preprocessing is written for the image
processor class that does what the run does, so that ``AutoImageProcessor`` gives the run's own tensor
whatever the network: ``BitImageProcessor`` for a centre crop (the short side resized, the centre
taken), ``DeiTImageProcessor`` for a squash (resized to a square, the centre taken),
``MobileViTImageProcessor`` where the weights take BGR. transformers has no processor that pads to the
mean colour (timm's ``border``): such a run is refused in one line. Several labels per image or a number
per image go under ``config.json``'s ``transferkit`` key, as for the timm-hub folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch.nn as nn

from .._text import one_line
from ..data.preprocess import Preprocessing
from ..errors import ConfigError
from ..inference.sidecar import task_facts
from ..model.hf_preprocessing import RESAMPLE
from ..model.hf_transformers import is_transformers_model
from ..serialization import write_text

__all__ = ["check_transformers_run", "load_transformers_folder", "processor_settings", "write_transformers_folder"]


def check_transformers_run(spec: str) -> None:
    """Refuse, in one line, a MODEL that transformers did not build."""
    if not is_transformers_model(spec):
        raise ConfigError(
            f"The transformers format needs a transformers MODEL (transformers:ORG/REPO or its folder); this run's "
            f"MODEL is '{spec}'. Export timm-hub for a timm model, or onnx, exported-program or safetensors.",
            argument="format",
        )


def write_transformers_folder(model: nn.Module, trained, folder: Path, *, card: str | None) -> None:
    """transformers' own folder for the run's model, with its classes, preprocessing and task facts."""
    processor = processor_settings(trained.preprocessing)  # refused before anything is written
    hf = model.hf_model
    names = list(trained.class_names)
    hf.config.num_labels = len(names)
    hf.config.id2label = dict(enumerate(names))
    hf.config.label2id = {name: i for i, name in enumerate(names)}
    facts = {**task_facts(trained), **({"temperature": trained.temperature} if trained.temperature else {})}
    if facts:
        hf.config.transferkit = facts
    hf.save_pretrained(str(folder), safe_serialization=True)
    write_text(folder / "preprocessor_config.json", json.dumps(processor, indent=2) + "\n")
    write_text(folder / "README.md", _readme(trained, card))


def processor_settings(pre: Preprocessing) -> dict:
    """``preprocessor_config.json`` for the image processor class that resizes, crops and normalises as ``pre``."""
    if pre.crop_mode == "border":
        raise ConfigError(
            "The transformers format cannot carry this run's preprocessing: transformers has no image processor "
            "that pads to the mean colour (crop_mode border). Export onnx or timm-hub instead.",
            argument="format",
        )
    height, width = pre.input_size[1:]
    resized = {"height": math.floor(height / pre.crop_pct), "width": math.floor(width / pre.crop_pct)}
    if pre.channel_order == "BGR":
        kind, size = "MobileViTImageProcessor", {"shortest_edge": resized["height"]}
    elif pre.crop_mode == "center":
        kind, size = "BitImageProcessor", {"shortest_edge": resized["height"]}
    else:
        kind, size = "DeiTImageProcessor", resized
    return {
        "image_processor_type": kind,
        "do_resize": True,
        "size": size,
        "resample": {name: code for code, name in RESAMPLE.items()}[pre.interpolation],
        "do_center_crop": True,
        "crop_size": {"height": height, "width": width},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
        "do_convert_rgb": True,
        **({"do_flip_channel_order": True} if pre.channel_order == "BGR" else {}),
    }


def load_transformers_folder(folder: Path) -> nn.Module:
    """The folder as transformers alone loads it, as a function of images to logits."""
    from transformers import AutoModelForImageClassification

    try:
        loaded = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    except (OSError, ValueError, RuntimeError) as e:
        raise ConfigError(f"transformers cannot load the exported folder: {one_line(e, 300)}") from None
    return lambda x: loaded(pixel_values=x).logits


def _readme(trained, card: str | None) -> str:
    head = (
        "---\nlibrary_name: transformers\npipeline_tag: image-classification\ntags:\n- transferkit\n---\n\n"
        "Load with transformers alone:\n\n```python\n"
        "from transformers import AutoImageProcessor, AutoModelForImageClassification\n\n"
        'processor = AutoImageProcessor.from_pretrained("ORG/REPO")\n'
        'model = AutoModelForImageClassification.from_pretrained("ORG/REPO").eval()\n'
        'logits = model(**processor(images, return_tensors="pt")).logits\n```\n\n'
        "The labels are `config.id2label`; `preprocessor_config.json` holds the run's resize, crop and "
        "normalisation.\n\n"
    )
    return head + (card or "")
