"""advise end to end on real weights and data."""

import json

import pytest

from transferkit.advice.advise import advise
from transferkit.train.config import TrainConfig


@pytest.mark.slow
def test_advise_on_digits(tmp_path):
    config = TrainConfig(
        model="tf_efficientnet_lite0",
        weights="lite0",
        data="builtin:digits",
        image_size=64,
        epochs=4,
        out=str(tmp_path / "advice"),
    )
    result = advise(config, log=lambda m: None)
    depths = result["depths"]
    assert len(depths) == 6 and depths[-1]["name"] == "head input"
    assert all(0.0 <= d["accuracy"] <= 1.0 for d in depths) and max(d["accuracy"] for d in depths) > 0.9
    assert result["images"] == {"train": 1437, "val": 360}
    assert result["advice"]["strategy"] in {"freeze", "head", "full", "lp-ft"}
    estimates = result["estimated_seconds"]
    assert estimates["--strategy freeze"] < estimates["--strategy full"]  # a pass over the data against epochs
    stored = json.loads((tmp_path / "advice" / "advice.json").read_text())
    assert stored["advice"] == result["advice"]
    assert (tmp_path / "advice" / "probe_depth.png").read_bytes()[:4] == b"\x89PNG"


def test_the_command_advise_prints_runs_as_shown(tmp_path, cli):
    """MODEL, weights, DATA, size, epochs and task options carried into the train command it prints."""
    import shlex

    import torch

    from tests.helpers import TinyNet
    from tests.tasks.csvs import regression_csv

    (tmp_path / "data").mkdir()
    data = regression_csv(tmp_path / "data", count=60)
    torch.save(TinyNet(num_classes=1).state_dict(), tmp_path / "w.pt")
    code, out, err = cli(
        "advise", "tests.helpers:TinyNet", "--weights", tmp_path / "w.pt", "--data", data, "--task", "regression",
        "--image-size", "16", "--epochs", "2", "--out", tmp_path / "my advice",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    printed = lines[next(i for i, line in enumerate(lines) if line.startswith("advised in ")) + 1]
    words = shlex.split(printed)
    assert words[:3] == ["transferkit", "train", "tests.helpers:TinyNet"]
    for flag, value in (("--weights", str(tmp_path / "w.pt")), ("--data", str(data)), ("--task", "regression"),
                        ("--image-size", "16"), ("--epochs", "2"), ("--out", str(tmp_path / "my advice" / "run"))):
        assert words[words.index(flag) + 1] == value, (flag, printed)  # fmt: skip
    code, out, err = cli(*words[1:], "--precision", "fp32", "--no-channels-last")
    assert code == 0, err
    report = json.loads((tmp_path / "my advice" / "run" / "report.json").read_text())
    assert report["task"] == "regression" and report["weights"] == str(tmp_path / "w.pt")
