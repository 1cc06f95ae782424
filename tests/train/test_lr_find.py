import numpy as np
import pytest

from tests.helpers import make_image_folder
from transferkit.errors import ConfigError
from transferkit.train.config import TrainConfig
from transferkit.train.lr_find import find_lr, suggest_lr


def test_suggestion_is_the_steepest_fall_before_the_minimum():
    rates = list(np.geomspace(1e-6, 10, 120))
    # A loss that falls around 1e-3 (a sigmoid in log rate), bottoms out, then explodes past 1.
    curve = [2 / (1 + np.exp(3 * (np.log10(r) + 3))) + 0.1 + (r if r > 1 else 0) * 5 for r in rates]
    assert 5e-4 < suggest_lr(rates, curve) < 2e-3
    with pytest.raises(ConfigError, match="diverged within the first steps"):
        suggest_lr(rates[:2], curve[:2])


def test_range_test_on_a_frozen_prefix_runs_on_cached_activations(tmp_path):
    make_image_folder(tmp_path / "data", per_class=12)
    config = TrainConfig(
        model="tests.helpers:TinyNet",
        data=str(tmp_path / "data"),
        out=str(tmp_path / "lr"),
        strategy="freeze",
        epochs=2,
        image_size=16,
        batch_size=8,
        precision="fp32",
        channels_last=False,
    )
    result = find_lr(config, steps=40, log=lambda m: None)
    assert result["cached"] and result["phase"] == "probe"
    assert 1e-7 <= result["suggestion"] <= 10 and len(result["lrs"]) == len(result["losses"]) > 10
    assert all(a < b for a, b in zip(result["lrs"], result["lrs"][1:]))
    assert (tmp_path / "lr" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="0 < start < end"):
        find_lr(config, start=1.0, end=0.1)


def test_lr_auto_trains_at_the_suggested_rate_and_records_it(tmp_path):
    import json

    from transferkit.train.engine import fit

    make_image_folder(tmp_path / "data", per_class=12)
    logged = []
    config = TrainConfig(
        model="tests.helpers:TinyNet",
        data=str(tmp_path / "data"),
        out=str(tmp_path / "run"),
        strategy="freeze",
        epochs=2,
        lr="auto",
        image_size=16,
        batch_size=8,
        precision="fp32",
        channels_last=False,
    )
    fit(config, log=logged.append)
    found = next(m for m in logged if m.startswith("lr auto: training at"))
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["lr"]
    assert isinstance(recorded, float) and f"{recorded:.2e}" in found
    assert (tmp_path / "run" / "lr_find.png").exists()
    with pytest.raises(ConfigError, match="lr auto finds one rate, and strategy gradual has two phases"):
        TrainConfig(model="m", data="d", out="o", strategy="gradual", lr="auto")
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        TrainConfig(model="m", data="d", out="o", lr="fast")
