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
