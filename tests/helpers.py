"""Tiny models and constants the tests share."""

import shutil
import subprocess

import torch
import torch.nn as nn


class TinyNet(nn.Module):
    """conv -> bn -> relu -> pool -> fc, small enough to build in every test."""

    def __init__(self, num_classes: int = 5, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        self.transferkit_input_size = (in_chans, 16, 16)

    def forward(self, x):
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_vit(num_classes: int = 5, in_chans: int = 3) -> nn.Module:
    """timm's VisionTransformer with two blocks of width 32 on 16 px images (4 px patches), at random weights."""
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=4,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=num_classes,
        in_chans=in_chans,
    )


ALEXNET_HEAD = [f"classifier.{i}.{k}" for i in (1, 4, 6) for k in ("weight", "bias")]

CHROMIUM = shutil.which("chromium")  # Debian's, which the set-up installs


def make_image_folder(root, classes=("cat", "dog"), per_class=6, size=20, seed=0):
    """A folder DATA of small PNGs: class 0 dark, class 1 bright, so a tiny model can learn it."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = 60 + 120 * index
            pixels = np.clip(rng.normal(base, 20, (size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def make_imbalanced_folder(root, *, test=False, dogs=4):
    """train/ with 24 cat and ``dogs`` dog images (a ratio of 6 by default), val/ with 6 and 2."""
    for split, keep in (("train", dogs), ("val", 2)):
        make_image_folder(root / split, per_class=24 if split == "train" else 6, seed=len(split))
        for extra in sorted((root / split / "dog").iterdir(), key=lambda p: int(p.stem))[keep:]:
            extra.unlink()
    if test:
        make_image_folder(root / "test", per_class=3, seed=4)
    return root


class SmallNet(nn.Module):
    """A few convolutions: enough to learn 8x8 digits in a few epochs, small enough for every test."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.fc = nn.Linear(256, num_classes)
        self.transferkit_input_size = (in_chans, 16, 16)

    def forward(self, x):
        return self.fc(self.features(x))


def tiny_config(data, out, **changes):
    """A TrainConfig for TinyNet at 16 px in fp32, random weights: fast, and the same kernels on every machine."""
    from transferkit.train.config import TrainConfig

    settings = dict(
        model="tests.helpers:TinyNet", weights="none", epochs=2, image_size=16, precision="fp32", channels_last=False
    )
    return TrainConfig(data=str(data), out=str(out), **{**settings, **changes})


def render_in_chromium(page, tmp_path):
    """(the DOM after load, Chromium's log, a screenshot) of a page in headless Chromium."""
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()], capture_output=True, timeout=120
    )
    return dom.stdout, dom.stderr, shot
