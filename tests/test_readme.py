"""The README's Python examples run as written, on files of the names they use."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(after: str) -> str:
    """The first ```python block after the line that starts with ``after``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(after)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


@pytest.mark.slow
def test_the_from_python_section_runs_as_written(tmp_path, monkeypatch, capsys):
    from skimage import data

    # What the example names: a checkpoint saved under DistributedDataParallel, a folder of five flowers, a photo.
    state = torchvision.models.alexnet().state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "alexnet_ddp.pth")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for k, flower in enumerate(["daisy", "dandelion", "rose", "sunflower", "tulip"]):
            folder = tmp_path / "flowers" / split / flower
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(40 * k + 40, 25, (64, 64, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i}.png")
    Image.fromarray(data.chelsea()).save(tmp_path / "rose.jpg")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(python_block("**From Python**"), "README.md", "exec"), scope)
    out = capsys.readouterr().out
    assert "alexnet_ddp.pth: 16 tensors matched (16 by name)\n  stripped prefixes 'module.'" in out
    assert "strategy as-is: your model's own freezing" in out
    learner = scope["learner"]
    assert len(learner.history) == 3 and learner.class_names == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert learner.history[0]["cached"] is True
    assert (tmp_path / "flowers.onnx").is_file() and (tmp_path / "runs" / "flowers" / "best.pt").is_file()
    assert all(not p.requires_grad for p in scope["model"].features.parameters())
