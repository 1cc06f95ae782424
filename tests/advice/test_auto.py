"""--strategy auto: the probe chooses, the run trains it and keeps the advice."""

import json

import pytest
import torch

from tests.helpers import TinyNet
from transferkit.advice.auto import choose_strategy, fit
from transferkit.train.config import TrainConfig
from transferkit.train.folder.model_card import write_model_card
from transferkit.train.setup import prepare_data
from transferkit.train.strategies import STRATEGIES

BASE = dict(model="tests.helpers:TinyNet", data="builtin:digits", image_size=16, epochs=2)
PINNED = dict(precision="fp32", channels_last=False)


def test_the_probe_chooses_and_leaves_the_model_as_it_was(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig(**BASE, out=str(tmp_path), strategy="auto")
    model = TinyNet(num_classes=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = prepare_data(config, model=model, log=lambda m: None)
    chosen, advice, raced = choose_strategy(config, model, data, log=lambda m: None)
    assert chosen.strategy in STRATEGIES and chosen.strategy == advice["strategy"]
    assert advice["command"].startswith(f"--strategy {chosen.strategy}") and advice["reason"]
    if chosen.strategy == "head":
        assert chosen.unfreeze_last == int(advice["command"].split()[-1])
    for key, value in model.state_dict().items():  # BatchNorm statistics included
        assert torch.equal(value, before[key]), key
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_a_run_with_strategy_auto_trains_the_advice_and_keeps_it(tmp_path):
    lines = []
    result = fit(TrainConfig(**BASE, **PINNED, out=str(tmp_path / "run"), strategy="auto"), log=lines.append)
    said = next(line for line in lines if line.startswith("strategy auto: training --strategy"))
    strategy = json.loads((tmp_path / "run" / "config.json").read_text())["strategy"]
    assert strategy in STRATEGIES and f"--strategy {strategy}" in said  # what resuming continues
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["strategy"] == strategy and report["advice"]["strategy"] == strategy
    assert (tmp_path / "run" / "advice.json").is_file() and (tmp_path / "run" / "probe_depth.png").is_file()
    card = write_model_card(tmp_path / "run").read_text()
    assert "strategy chosen by the probe (strategy auto)" in card
    assert result["advice"]["reason"] in card


def test_a_probe_that_advises_freeze_is_the_cache(tmp_path, monkeypatch):
    """The probe ran every image to the head's input: freeze takes those features, checked, instead of a pass."""
    from transferkit.advice import advise as advise_module

    def always_freeze(depths, gap, measure, **settings):
        return {"strategy": "freeze", "command": "--strategy freeze", "reason": "asked by the test", "signals": []}

    monkeypatch.setattr(advise_module, "recommend", always_freeze)
    lines = []
    auto = fit(TrainConfig(**BASE, **PINNED, out=str(tmp_path / "auto"), strategy="auto"), log=lines.append)
    cache = next(line for line in lines if line.startswith("cache:"))
    assert "from strategy auto's probe" in cache
    alone = fit(TrainConfig(**BASE, **PINNED, out=str(tmp_path / "freeze"), strategy="freeze"), log=lambda m: None)
    assert abs(auto["best_val_acc"] - alone["best_val_acc"]) <= 0.02


def test_a_budget_the_advice_would_overrun_trains_less(tmp_path, monkeypatch):
    """--budget: the probe's seconds count against it; an advice estimated over what is left trains less, said why."""
    from transferkit.advice import advise as advise_module

    def deep_head(depths, gap, measure, **settings):
        return {"strategy": "head", "unfreeze_last": 2, "command": "--strategy head --unfreeze-last 2",
                "reason": "asked by the test", "signals": []}  # fmt: skip

    monkeypatch.setattr(advise_module, "recommend", deep_head)
    out = tmp_path / "run"
    result = fit(TrainConfig(**BASE, **PINNED, out=str(out), strategy="auto", budget=1e-3), log=lambda m: None)
    advice = result["advice"]
    assert advice["strategy"] == "freeze" and advice["budget"] == 1e-3
    assert "but --strategy head --unfreeze-last 2 would take about" in advice["reason"]
    assert "so --strategy freeze" in advice["reason"] and "the cheapest, as none fits" in advice["reason"]
    config = json.loads((out / "config.json").read_text())
    assert config["strategy"] == "freeze" and config["budget"] is None  # what resuming continues: no choice left
    stored = json.loads((out / "advice.json").read_text())
    assert stored["advice"]["over_budget"] == "--strategy head --unfreeze-last 2"
    assert {"--strategy freeze", "--strategy full"} <= set(stored["estimated_seconds"])
    assert [row["command"] for row in stored["considered"]][0] == "--strategy freeze"


def test_a_head_advice_races_the_depth_before_and_the_winner_goes_on(tmp_path, monkeypatch):
    """One epoch each; the better goes on from its checkpoint, as its own run would have: the same epochs."""
    from transferkit.advice import advise as advise_module

    def last_two(depths, gap, measure, **settings):
        return {"strategy": "head", "unfreeze_last": 2, "command": "--strategy head --unfreeze-last 2",
                "reason": "asked by the test", "signals": []}  # fmt: skip

    monkeypatch.setattr(advise_module, "recommend", last_two)
    lines, out = [], tmp_path / "auto"
    auto = fit(TrainConfig(**BASE, **PINNED, out=str(out), strategy="auto"), log=lines.append)
    race = auto["advice"]["race"]
    assert [c["command"] for c in race["candidates"]] == [f"--strategy head --unfreeze-last {n}" for n in (2, 3)]
    winner = int(race["winner"].split()[-1])
    said = next(line for line in lines if line.startswith("race: after 1 epoch"))
    assert said.endswith(f": --strategy head --unfreeze-last {winner} goes on")
    assert "raced against --unfreeze-last 3 for 1 epoch" in auto["advice"]["reason"]
    config = json.loads((out / "config.json").read_text())
    assert (config["strategy"], config["unfreeze_last"]) == ("head", winner)
    assert not (out / "race").exists() and (out / "best.pt").is_file()
    (out / "race" / "2").mkdir(parents=True)  # as an interrupted race leaves it
    (out / "race" / "2" / "last.pt").write_bytes(b"partial")
    again = fit(TrainConfig(**BASE, **PINNED, out=str(out), strategy="auto"), overwrite=True, log=lambda m: None)
    assert again["advice"]["race"]["winner"] == race["winner"] and not (out / "race").exists()
    alone = fit(
        TrainConfig(**BASE, **PINNED, out=str(tmp_path / "alone"), strategy="head", unfreeze_last=winner),
        log=lambda m: None,
    )
    assert [e["epoch"] for e in auto["epochs"]] == [1, 2]
    for ours, theirs in zip(auto["epochs"], alone["epochs"], strict=True):
        assert abs(ours["val_loss"] - theirs["val_loss"]) < 1e-4 and ours["val_acc"] == theirs["val_acc"]


@pytest.mark.slow
def test_auto_on_real_weights_freezes_photos_and_races_blocks_on_digits(tmp_path):
    """lite0's own weights: faces are what ImageNet features separate (freeze); 8x8 digits at 64 px are not, and
    the race retrains from an early depth."""
    common = dict(model="tf_efficientnet_lite0", weights="lite0", image_size=64, epochs=3, strategy="auto")
    faces = fit(TrainConfig(**common, data="builtin:faces", out=str(tmp_path / "faces")), log=lambda m: None)
    assert faces["advice"]["strategy"] == "freeze" and faces["advice"]["race"] is None
    lines = []
    digits = fit(
        TrainConfig(**common, data="builtin:digits", train_images=800, out=str(tmp_path / "digits")), log=lines.append
    )
    advice = digits["advice"]
    assert advice["strategy"] == "head" and advice["race"]["winner"] == advice["command"]
    config = json.loads((tmp_path / "digits" / "config.json").read_text())
    assert config["unfreeze_last"] >= 4  # blocks.3 or earlier: most of the network adapts
    assert [e["epoch"] for e in digits["epochs"]] == [1, 2, 3] and digits["best_val_acc"] > 0.85  # chance: 0.1
    said = "strategy auto: on the advice benchmark, the 10 datasets advised head"
    assert any(line.startswith(said) for line in lines)
