"""Sweeps on cached features: the interval arithmetic, the files written, and train --config reading them."""

import json
import math

import pytest

from tests.helpers import make_image_folder, tiny_config
from transferkit.advice.sweep import interval, sweep
from transferkit.errors import ConfigError
from transferkit.train.config import read_config_file


def test_the_interval_is_students_t():
    mean, low, high = interval([0.90, 0.92, 0.94])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2) times the standard error
    assert mean == pytest.approx(0.92) and low == pytest.approx(0.92 - half) and high == pytest.approx(0.92 + half)
    assert interval([0.5]) == (0.5, 0.5, 0.5)
    assert interval([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))


def test_a_sweep_writes_a_config_that_train_reads(tmp_path, cli_json):
    make_image_folder(tmp_path / "data", per_class=20, size=20)
    config = tiny_config(tmp_path / "data", tmp_path / "sweep", strategy="freeze", epochs=3)
    result = sweep(config, trials=3, seeds=2, log=lambda m: None)
    assert len(result["settings"]) == 3 and all(len(r["scores"]) == 2 for r in result["settings"])
    assert result["score"] == "val_acc" and result["higher_better"]
    means = [r["mean"] for r in result["settings"]]
    assert means == sorted(means, reverse=True) and result["best"]["mean"] == means[0]
    best = json.loads((tmp_path / "sweep" / "best_config.json").read_text())
    assert best["lr"] == result["best"]["lr"] and best["strategy"] == "freeze" and "out" not in best
    config_file, run = tmp_path / "sweep" / "best_config.json", tmp_path / "run"
    cli_json("train", "--config", config_file, "--out", run, "--epochs", 1, "--trust-code")
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["lr"] == best["lr"] and stored["epochs"] == 1  # the typed option wins over the file


def test_imbalanced_classes_are_swept_by_balanced_accuracy(tmp_path):
    from tests.helpers import make_imbalanced_folder

    make_imbalanced_folder(tmp_path / "data")
    config = tiny_config(tmp_path / "data", tmp_path / "sweep", strategy="freeze", epochs=2)
    lines = []
    result = sweep(config, trials=2, seeds=1, log=lines.append)
    assert result["score"] == "val_balanced_acc"
    assert "classes imbalanced: heads trained with balanced class weights and scored by balanced accuracy" in lines
    assert any(": val_balanced_acc " in line for line in lines)


def test_a_config_file_with_unknown_settings_is_refused(tmp_path):
    (tmp_path / "c.json").write_text('{"lr": 0.1, "learning_rate": 0.1}')
    with pytest.raises(ConfigError, match="unknown settings: learning_rate"):
        read_config_file(str(tmp_path / "c.json"))
    (tmp_path / "d.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not an object"):
        read_config_file(str(tmp_path / "d.json"))
