"""The world the hostile-input corpus runs in: an image folder, a model file and two trained runs.

Built once per session in a temporary folder; each case copies what it damages.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import make_image_folder
from transferkit.cli.app import main

# A model file as users write them. Importing it leaves a mark, so that a case can show that
# nothing imported it; with POISON beside it, its forward pass returns NaN (a diverging run).
MODEL_FILE = """
from pathlib import Path

import torch
import torch.nn as nn

Path(__file__).with_name("IMPORTED").touch()


class Tiny(nn.Module):
    def __init__(self, num_classes=2):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)
        self.transferkit_input_size = (3, 16, 16)

    def forward(self, x):
        out = self.fc(self.features(x))
        if Path(__file__).with_name("POISON").exists():
            out = out * float("nan")
        return out


def tiny(num_classes=2):
    return Tiny(num_classes)
"""

FAST = [
    "--epochs", "1", "--image-size", "16", "--precision", "fp32", "--no-channels-last", "--batch-size", "8",
    "--weights", "none",
]  # fmt: skip


@dataclass
class World:
    root: Path
    data: Path  # DIR/<class>/*.png, two classes of 8
    net: Path  # the model file
    run: Path  # trained with test_resnet (no user code)
    code_run: Path  # trained with net.py:tiny

    @property
    def spec(self) -> str:
        return f"{self.net}:tiny"

    def marker(self) -> Path:
        return self.net.with_name("IMPORTED")

    def copy(self, what: Path, tmp: Path, name: str | None = None) -> Path:
        target = tmp / (name or what.name)
        if what.is_dir():
            shutil.copytree(what, target, symlinks=True)
        else:
            shutil.copy2(what, target)
        return target


def run_cli(*args) -> int:
    """The real entry point, in-process; returns the exit code (output goes to the caller's capture)."""
    argv = sys.argv
    sys.argv = ["transferkit", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    data = make_image_folder(root / "data", per_class=8, size=20)
    code = root / "code"
    code.mkdir()
    net = code / "net.py"
    net.write_text(MODEL_FILE)
    w = World(root, data, net, root / "run", root / "code_run")
    for model, out in (("test_resnet", w.run), (w.spec, w.code_run)):
        assert run_cli("train", model, "--data", data, "--out", out, *FAST, "--strategy", "full") == 0
    w.marker().unlink()
    return w
