"""The image processor an exported transformers folder carries gives the run's own tensor."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from transferkit.data.preprocess import EvalTransform, Preprocessing
from transferkit.deploy.transformers_folder import processor_settings
from transferkit.errors import ConfigError

transformers = pytest.importorskip("transformers")

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize(
    "pre",
    [
        Preprocessing((3, 224, 224), *IMAGENET, "bicubic", 0.875, "center", "floor"),
        Preprocessing((3, 192, 192), *IMAGENET, "bilinear", 1.0, "squash", "floor"),
        Preprocessing((3, 224, 224), (0.5,) * 3, (0.5,) * 3, "bicubic", 0.9, "squash", "floor"),
        Preprocessing((3, 256, 256), (0.0,) * 3, (1.0,) * 3, "bicubic", 256 / 288, "center", "floor", "BGR"),
    ],
    ids=["center", "squash", "squash-crop", "bgr"],
)
def test_the_written_processor_gives_the_runs_tensor(pre, tmp_path):
    import skimage.data

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor_settings(pre)))
    processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
    for name in ("chelsea", "coffee", "rocket"):
        photo = Image.fromarray(getattr(skimage.data, name)())
        expected = processor(photo, return_tensors="pt").pixel_values[0]
        grey = (EvalTransform(pre)(photo) - expected).abs() * torch.tensor(pre.std).view(-1, 1, 1) * 255
        assert grey.max() < 0.01, (name, grey.max().item())


def test_a_border_run_is_refused_for_the_transformers_format():
    pre = Preprocessing((3, 224, 224), *IMAGENET, "bicubic", 1.0, "border")
    with pytest.raises(ConfigError, match="no image processor that pads to the mean colour"):
        processor_settings(pre)
