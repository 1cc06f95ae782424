"""The README's Python examples run as written, on files of the names they use."""

import json
import re
import shutil
import sys
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


def test_the_serving_section_runs_as_written(tmp_path, tiny_run):
    """The section's shell lines and Python block against the session's tiny run (its MODEL is code from
    tests/helpers.py, hence ``--trust-code``), on a free port in place of 8000."""
    import shlex
    import shutil
    import subprocess

    from tests.serve.conftest import Served, free_port

    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Using a trained model") :]
    shell = re.search(r"```\n(transferkit serve .*?)```", section, re.S).group(1)
    port = str(free_port())
    lines = [line.split("  #")[0].strip().replace("8000", port) for line in shell.strip().splitlines()]
    serve, curls = shlex.split(lines[0]), lines[1:]
    assert serve[:3] == ["transferkit", "serve", "runs/mnist"] and len(curls) == 4
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    images = sorted(tiny_run[1].rglob("*.png"))
    shutil.copy(images[0], tmp_path / "digit.png")
    shutil.copy(images[-1], tmp_path / "other.png")
    server = Served(tiny_run[0], *serve[3:])
    try:
        answers = [subprocess.run(c, shell=True, cwd=tmp_path, capture_output=True, text=True).stdout for c in curls]
        one, two, metadata = (json.loads(a) for a in answers[:3])
        assert len(one["predictions"]) == 1 and [len(p["top"]) for p in two["predictions"]] == [2, 2]
        assert metadata["classes"] == ["cat", "dog"] and "transferkit_requests_total" in answers[3]
        block = python_block("From Python, `create_app(predictor)`").replace("8000", port)
        result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True)
        printed = result.stdout.splitlines()
        assert printed[0] == "['cat', 'dog']" and printed[1].startswith("[{'image': 'digit.png', 'top': [")
    finally:
        code, _ = server.stop()
    assert code == 0


def test_the_batch_prediction_lines_run_as_written(tmp_path, tiny_run, cli, monkeypatch):
    """The section's `predict --out` lines on the session's tiny run (``--trust-code``: its MODEL is code), its
    images as photos/, a CSV of them with labels and shards of them."""
    import shlex

    import pandas as pd

    from transferkit.data.shards import write_shards
    from transferkit.data.sources import open_data

    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Using a trained model") :]
    block = re.search(r"```\n(transferkit predict .*?)```", section, re.S).group(1)
    lines = [shlex.split(line.split("  #")[0]) for line in block.strip().splitlines()]
    run, data = tiny_run
    photos = tmp_path / "photos"
    shutil.copytree(data, photos)
    (tmp_path / "photos.csv").write_text(
        "path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in sorted(photos.rglob("*.png")))
    )
    write_shards(open_data(str(data)), tmp_path / "shards", shard_size=3000, log=lambda m: None)
    monkeypatch.chdir(tmp_path)
    first = None
    for line in lines:  # the last, --resume with nothing interrupted, predicts the whole folder again
        assert line[:3] == ["transferkit", "predict", "runs/mnist"]
        code, out, err = cli("predict", run, *line[3:], "--trust-code", "--device", "cpu")
        assert code == 0, err
        first = first or (tmp_path / "predictions.csv").read_bytes()
    assert (tmp_path / "predictions.csv").read_bytes() == first
    tables = [pd.read_csv("predictions.csv"), pd.read_parquet("predictions.parquet")]
    tables.append(pd.read_json("predictions.jsonl", lines=True))
    assert [len(t) for t in tables] == [20, 20, 20] and "label" in tables[1] and "label" in tables[2]
