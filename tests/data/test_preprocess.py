"""transferkit's evaluation tensor against timm's own transform, on real photos."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import transferkit as tk
from transferkit.data.preprocess import (
    EvalTransform,
    Preprocessing,
    crop_pct_of,
    legacy_note,
    resized_size,
)

PHOTOS = ("chelsea", "coffee", "rocket")  # 300x451, 400x600, 427x640: landscape, odd and even sides


@pytest.fixture(scope="module")
def photos():
    import skimage.data

    return {name: Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS}


def _grey_levels(ours: torch.Tensor, theirs: torch.Tensor, std) -> torch.Tensor:
    """|difference| of two normalised tensors in 0-255 grey levels."""
    return (ours - theirs).abs() * torch.tensor(std).view(-1, 1, 1) * 255


def _registry_combinations() -> dict[tuple, dict]:
    """One pretrained configuration of each distinct (crop_mode, crop_pct, interpolation, input size) in timm."""
    import timm
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    found = {}
    for name in timm.list_pretrained():
        cfg = get_pretrained_cfg(name).to_dict()
        data = resolve_data_config(pretrained_cfg=cfg)
        key = (data["crop_mode"], data["crop_pct"], data["interpolation"], tuple(data["input_size"]))
        found.setdefault(key, cfg)
    return found


class _Configured(nn.Module):
    """A network carrying a timm pretrained configuration, as timm's models do."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.pretrained_cfg = cfg


def _within_a_grey_level(ours, theirs, std) -> tuple[float, float, float]:
    grey = _grey_levels(ours, theirs, std)
    return grey.max().item(), grey.mean().item(), (grey > 1.001).float().mean().item()


@pytest.mark.slow
def test_every_registry_combination_matches_timms_transform(photos):
    """Every distinct (crop_mode, crop_pct, interpolation, size) among timm's pretrained configurations.

    The crop and the resize's size are timm's to the pixel (equal shapes, mean difference near 0); what is
    left is torch's uint8 resize against PIL's, one grey level apart but for a few pixels at two.
    """
    from timm.data import create_transform, resolve_model_data_config

    combinations = _registry_combinations()
    modes = {key[0] for key in combinations}
    assert {"center", "squash", "border"} <= modes and len(combinations) > 50
    assert any(key[3][1] != key[3][2] for key in combinations)  # a non-square input size is among them
    failures = []
    for key, cfg in combinations.items():
        model = _Configured(cfg)
        theirs = create_transform(**resolve_model_data_config(model))
        ours = tk.eval_transform(model)
        assert ours.preprocessing.crop_mode == key[0] and ours.preprocessing.input_size == key[3]
        for name, photo in photos.items():
            expected, got = theirs(photo), ours(photo)
            if got.shape != expected.shape:
                failures.append((key, name, tuple(got.shape), tuple(expected.shape)))
                continue
            worst, mean, above_one = _within_a_grey_level(got, expected, cfg["std"])
            if worst > 2.001 or mean > 0.05 or above_one > 1e-4:
                failures.append((key, name, worst, mean, above_one))
    assert not failures, failures[:5]


def test_the_issue_photo_for_a_squash_checkpoint_is_timms(photos):
    """coat_lite_medium_384 (squash, crop 1.0) on the coffee photo: once 40.8 grey levels apart on average."""
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg("coat_lite_medium_384.in1k").to_dict()
    assert cfg["crop_mode"] == "squash"
    ours = tk.eval_transform(_Configured(cfg))(photos["coffee"])
    theirs = create_transform(**resolve_data_config(pretrained_cfg=cfg))(photos["coffee"])
    assert _grey_levels(ours, theirs, cfg["std"]).mean() < 0.05


def test_a_real_timm_model_with_squash_preprocessing(photos):
    import timm
    from timm.data import create_transform, resolve_model_data_config

    model = timm.create_model("convnextv2_nano.fcmae_ft_in22k_in1k_384", pretrained=False)
    transform = tk.eval_transform(model)
    assert transform.preprocessing.crop_mode == "squash"
    theirs = create_transform(**resolve_model_data_config(model))
    for photo in photos.values():
        worst, mean, _ = _within_a_grey_level(transform(photo), theirs(photo), transform.preprocessing.std)
        assert worst <= 2.001 and mean < 0.05
    assert "squash" in repr(transform) and "384x384" in repr(transform)


def test_a_non_square_centre_crop_keeps_the_aspect_ratio(photos):
    """timm's ResizeKeepRatio for a non-square size in centre mode (bilinear, as timm resizes there)."""
    from timm.data import create_transform

    pre = Preprocessing((3, 224, 160), (0.5,) * 3, (0.5,) * 3, "bilinear", 0.9, "center")
    theirs = create_transform(
        input_size=(3, 224, 160), crop_pct=0.9, crop_mode="center", interpolation="bilinear", mean=pre.mean, std=pre.std
    )
    got = EvalTransform(pre)(photos["coffee"])
    assert got.shape == (3, 224, 160)
    assert _grey_levels(got, theirs(photos["coffee"]), pre.std).mean() < 0.05


def test_border_pads_with_the_mean_colour_and_loses_nothing():
    pre = Preprocessing((3, 100, 100), (0.2, 0.4, 0.6), (0.5,) * 3, "bilinear", 1.0, "border")
    wide = torch.full((3, 50, 200), 255, dtype=torch.uint8)  # 4:1, long side to 100: 25 rows of image
    out = EvalTransform(pre).uint8(wide)
    assert out.shape == (3, 100, 100)
    assert resized_size(50, 200, pre) == (25, 100)
    assert out[:, 37:62].eq(255).all()  # the image, centred
    assert out[:, 0, 0].tolist() == [51, 102, 153]  # round(255 * mean)


def test_squash_keeps_the_whole_image_and_center_crops_it():
    squash = Preprocessing((3, 64, 64), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, "squash")
    center = Preprocessing((3, 64, 64), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, "center")
    stripes = torch.zeros((3, 64, 256), dtype=torch.uint8)
    stripes[:, :, :32] = 255  # only the left eighth is white
    assert EvalTransform(squash).uint8(stripes)[:, :, :4].float().mean() > 200  # squashed in: still at the left
    assert EvalTransform(center).uint8(stripes).max() == 0  # the centre crop leaves it out


def test_eval_transform_takes_what_notebooks_hold(photos):
    import timm

    transform = tk.eval_transform(timm.create_model("resnet18"))
    photo = photos["chelsea"]
    expected = transform(photo)
    pixels = np.array(photo)
    torch.testing.assert_close(transform(pixels), expected)
    torch.testing.assert_close(transform(torch.from_numpy(pixels).permute(2, 0, 1)), expected)
    torch.testing.assert_close(transform(photo.convert("RGBA")), expected)
    grey = transform(photo.convert("L"))
    assert grey.shape == expected.shape
    with pytest.raises(TypeError, match=r"image: a tensor must be \(C, H, W\) uint8.*by 255"):
        transform(torch.rand(3, 64, 64))
    with pytest.raises(TypeError, match="image must be a PIL image"):
        transform("/tmp/cat.png")


def test_crop_pct_of_gives_back_the_resize_under_timms_floor():
    assert math.floor(384 / (384 / 450)) == 449  # the float rounding the helper is for
    for crop in (85, 224, 256, 384):
        for resized in range(crop, crop + 80):
            assert math.floor(crop / crop_pct_of(crop, resized)) == resized


def test_a_run_stored_before_crop_modes_were_applied_keeps_the_centre_crop():
    old = {"input_size": [3, 384, 384], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
           "crop_pct": 1.0, "crop_mode": "squash"}  # fmt: skip
    assert Preprocessing.from_dict(old).crop_mode == "center"
    assert "was not used in training" in legacy_note(old)
    current = Preprocessing.from_dict(old).__class__(**{**old, "input_size": (3, 384, 384)}).to_dict()
    assert Preprocessing.from_dict(current).crop_mode == "squash" and legacy_note(current) is None
    assert legacy_note({**old, "crop_mode": "center"}) is None  # a centre crop was applied all along


def test_unknown_crop_modes_and_filters_are_refused():
    with pytest.raises(ValueError, match="crop_mode 'stretch' is not one of center, squash, border"):
        Preprocessing((3, 8, 8), (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0, "stretch")
    with pytest.raises(ValueError, match="interpolation 'cubic'"):
        Preprocessing((3, 8, 8), (0.5,) * 3, (0.5,) * 3, "cubic", 1.0, "center")


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b1"])  # 256 -> 224 bilinear; 255 -> 240 bilinear
def test_a_torchvision_architecture_gets_its_default_weights_transforms(name, photos):
    import torchvision

    model = tk.create_model(f"torchvision:{name}", num_classes=3)
    theirs = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    ours = tk.eval_transform(model)
    assert ours.preprocessing.interpolation == "bilinear"
    for photo in photos.values():
        expected = theirs(photo)
        assert ours(photo).shape == expected.shape
        assert _grey_levels(ours(photo), expected, ours.preprocessing.std).mean() < 0.05
