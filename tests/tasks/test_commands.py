"""compare, advise, sweep, lr-find and strategy auto on several labels per image and on numbers."""

import json

import pytest

from tests.helpers import tiny_config
from tests.tasks.csvs import multilabel_csv, regression_csv
from transferkit.advice.advise import advise
from transferkit.advice.auto import fit
from transferkit.advice.compare import compare
from transferkit.advice.sweep import sweep
from transferkit.train.lr_find import find_lr

SCORES = {"multi-label": ("val_map", True), "regression": ("val_mae", False)}


def _csv(task, root, count=120):
    return multilabel_csv(root, count=count) if task == "multi-label" else regression_csv(root, count=count)


@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_compare_ranks_strategies_by_the_tasks_score(tmp_path, task):
    config = tiny_config(_csv(task, tmp_path), tmp_path / "cmp", task=task, epochs=2, lr=1e-2)
    result = compare(config, ["full", "freeze", "scratch"], log=lambda m: None)
    score, higher = SCORES[task]
    rows = {r["strategy"]: r for r in result["rows"]}
    for strategy, row in rows.items():
        history = json.loads((tmp_path / "cmp" / strategy / "report.json").read_text())
        assert row["score"] == score and row["higher_better"] is higher
        assert row["best"] == history["best_score"]["value"] and len(row["curve"]) == 2
        assert "best_acc" not in row  # accuracy belongs to classes
    winner = (max if higher else min)(rows.values(), key=lambda r: r["best"])
    assert result["verdict"][0].startswith(f"{winner['strategy']} wins: {'mAP' if higher else 'MAE'} ")
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_advise_probes_with_the_tasks_linear_model(tmp_path, task):
    config = tiny_config(_csv(task, tmp_path), tmp_path / "advice", task=task)
    lines = []
    result = advise(config, log=lines.append)
    measure = "mAP" if task == "multi-label" else "R²"
    assert result["task"] == task and result["score"] == measure
    assert all(line.startswith("probe after ") and f": {measure} " in line for line in lines if "probe after" in line)
    named = "map" if task == "multi-label" else "r2"
    assert [d["score"] for d in result["depths"]] == [d[named] for d in result["depths"]]
    assert result["advice"]["strategy"] in ("freeze", "head", "full", "lp-ft")
    # the colours are linear in the pooled features of even a random network: the probe sees them
    # (by chance, mAP would be about 0.35: half the images are red, half green, 1 in 24 'rare')
    assert max(d["score"] for d in result["depths"]) > (0.6 if task == "multi-label" else 0.5), result["depths"]
    assert (tmp_path / "advice" / "advice.json").is_file() and (tmp_path / "advice" / "probe_depth.png").is_file()


@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_sweep_searches_head_settings_by_the_tasks_score(tmp_path, task):
    config = tiny_config(_csv(task, tmp_path), tmp_path / "sweep", task=task, strategy="freeze", epochs=3)
    result = sweep(config, trials=3, seeds=2, log=lambda m: None)
    score, higher = SCORES[task]
    assert result["score"] == score and result["higher_better"] is higher
    means = [r["mean"] for r in result["settings"]]
    assert means == sorted(means, reverse=higher) and all(r["label_smoothing"] == 0.0 for r in result["settings"])
    best = json.loads((tmp_path / "sweep" / "best_config.json").read_text())
    assert best["task"] == task and best["lr"] == result["best"]["lr"]


@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_lr_find_sweeps_on_the_tasks_loss(tmp_path, task):
    config = tiny_config(_csv(task, tmp_path), tmp_path / "lr", task=task, strategy="freeze")
    result = find_lr(config, steps=30, log=lambda m: None)
    assert result["cached"] and 1e-7 <= result["suggestion"] <= 10
    assert min(result["smoothed"]) < result["smoothed"][0] and (tmp_path / "lr" / "lr_find.png").is_file()
    if task == "multi-label":  # binary cross-entropy starts near ln 2; cross-entropy over 3 labels would be near 1.1+
        assert 0.5 < result["losses"][0] < 0.8, result["losses"][:3]


def test_strategy_auto_trains_what_the_tasks_probe_advises(tmp_path):
    config = tiny_config(_csv("regression", tmp_path), tmp_path / "run", task="regression", strategy="auto", epochs=2)
    lines = []
    summary = fit(config, log=lines.append)
    advice = json.loads((tmp_path / "run" / "advice.json").read_text())
    assert advice["task"] == "regression" and summary["strategy"] == advice["advice"]["strategy"]
    assert any(line.startswith("strategy auto: training --strategy ") for line in lines)
