"""transformers image processors read as transferkit's preprocessing: the tensor fed to the model against the one
the processor itself gives (``AutoImageProcessor.from_pretrained(folder)(image)``), on real photos."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from transferkit.data.preprocess import EvalTransform, Preprocessing
from transferkit.errors import ModelSpecError
from transferkit.model.hf_preprocessing import processor_config

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def photos():
    import skimage.data

    return [Image.fromarray(getattr(skimage.data, name)()) for name in ("chelsea", "coffee", "rocket")]


def _processors() -> dict:
    """Every processor class of transformers' image classifiers that feeds fixed-size images, in the settings
    their checkpoints use (defaults, and the variants DINOv2, BEiT and MobileViT checkpoints save)."""
    t = transformers
    return {
        "vit": t.ViTImageProcessor(),
        "vit-384-bicubic": t.ViTImageProcessor(size={"height": 384, "width": 384}, resample=3),
        "deit": t.DeiTImageProcessor(),
        "beit": t.BeitImageProcessor(),
        "beit-crop": t.BeitImageProcessor(
            do_center_crop=True, size={"height": 256, "width": 256}, crop_size={"height": 224, "width": 224}
        ),
        "convnext-224": t.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
        "convnext-384": t.ConvNextImageProcessor(),
        "bit": t.BitImageProcessor(),
        "dinov2": t.BitImageProcessor(size={"shortest_edge": 256}),
        "clip": t.CLIPImageProcessor(),
        "levit": t.LevitImageProcessor(),
        "poolformer": t.PoolFormerImageProcessor(),
        "mobilenet_v1": t.MobileNetV1ImageProcessor(),
        "mobilenet_v2": t.MobileNetV2ImageProcessor(),
        "mobilevit": t.MobileViTImageProcessor(),  # short side 224, crop 256: padded, and BGR
        "mobilevit-288": t.MobileViTImageProcessor(size={"shortest_edge": 288}),
        "pvt": t.PvtImageProcessor(),
        "segformer": t.SegformerImageProcessor(size={"height": 224, "width": 224}),
        "siglip": t.SiglipImageProcessor(),
        "efficientnet": t.EfficientNetImageProcessor(),  # its second division by the deviation included
    }


@pytest.mark.parametrize("name", list(_processors()))
def test_the_tensor_fed_is_the_processors_own(name, photos, tmp_path):
    processor = _processors()[name]
    processor.save_pretrained(tmp_path)
    pre = Preprocessing.from_config(processor_config(tmp_path))
    transform = EvalTransform(pre)
    for photo in photos:
        expected = processor(photo, return_tensors="pt").pixel_values[0]
        got = transform(photo)
        assert got.shape == expected.shape
        grey = (got - expected).abs() * torch.tensor(pre.std).view(-1, 1, 1) * 255
        assert grey.max() < 0.01, (name, grey.max().item())  # the same torch kernels: equal to float rounding


def test_mobilevit_reads_its_crop_larger_than_its_resize_and_its_channel_flip(tmp_path):
    transformers.MobileViTImageProcessor().save_pretrained(tmp_path)
    pre = Preprocessing.from_config(processor_config(tmp_path))
    assert pre.input_size == (3, 256, 256) and pre.channel_order == "BGR" and pre.crop_offset == "floor"
    assert pre.mean == (0.0, 0.0, 0.0) and pre.std == pytest.approx((1.0,) * 3)  # rescaled to [0, 1], no more
    red = torch.zeros((3, 300, 300), dtype=torch.uint8)
    red[0] = 255
    assert EvalTransform(pre).uint8(red)[2].float().mean() > 150  # red ends up in the last channel


@pytest.mark.parametrize("name", ["perceiver", "pp_lcnet"])
def test_processors_with_rules_of_their_own_are_approximated(name, tmp_path, photos):
    """Perceiver crops the centre square first and resizes it: the same region, resampled over another extent.
    PP-LCNet rounds the long side where torchvision truncates it: one pixel more, now and then."""
    kinds = {"perceiver": transformers.PerceiverImageProcessor, "pp_lcnet": transformers.PPLCNetImageProcessor}
    processor = kinds[name]()
    processor.save_pretrained(tmp_path)
    pre = Preprocessing.from_config(processor_config(tmp_path))
    assert pre.input_size == (3, 224, 224) and pre.crop_mode == "center"
    assert pre.channel_order == ("BGR" if name == "pp_lcnet" else "RGB")
    for photo in photos:
        expected = processor(photo, return_tensors="pt").pixel_values[0]
        grey = (EvalTransform(pre)(photo) - expected).abs() * torch.tensor(pre.std).view(-1, 1, 1) * 255
        assert grey.mean() < 5


def test_processors_that_feed_no_fixed_size_image_are_refused(tmp_path):
    transformers.ImageGPTImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(ModelSpecError, match="ImageGPTImageProcessor turns images into colour-cluster tokens"):
        processor_config(tmp_path)
