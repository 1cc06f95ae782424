"""--strategy auto: the probe chooses, the run trains it and keeps the advice."""

import json

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
    chosen, advice = choose_strategy(config, model, data, log=lambda m: None)
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
