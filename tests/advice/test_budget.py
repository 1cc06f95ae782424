"""Within a time budget the advice trains less of what the probes chose."""

import pytest

from transferkit.advice.budget import within_budget
from transferkit.errors import ConfigError
from transferkit.train.config import TrainConfig

ESTIMATES = {
    "--strategy freeze": 2.0,
    "--strategy full": 40.0,
    "--strategy lp-ft": 35.0,
    "--strategy head --unfreeze-last 5": 30.0,
    "--strategy head --unfreeze-last 4": 20.0,
    "--strategy head --unfreeze-last 2": 8.0,
}
HEAD4 = {"strategy": "head", "unfreeze_last": 4, "command": "--strategy head --unfreeze-last 4", "reason": "probes"}


def test_an_advice_that_fits_stays():
    assert within_budget(HEAD4, ESTIMATES, budget=25) is HEAD4


def test_over_the_budget_the_most_of_the_advice_that_fits():
    advice = within_budget(HEAD4, ESTIMATES, budget=10)
    assert advice["command"] == "--strategy head --unfreeze-last 2" and advice["unfreeze_last"] == 2
    assert advice["over_budget"] == "--strategy head --unfreeze-last 4"
    assert advice["reason"] == (
        "probes; but --strategy head --unfreeze-last 4 would take about 20 s, over the budget of 10 s, so "
        "--strategy head --unfreeze-last 2 (about 8 s), the one that trains the most of what was advised within it"
    )


def test_never_more_than_advised_and_the_cheapest_when_nothing_fits():
    full = {"strategy": "full", "command": "--strategy full", "reason": "far"}
    assert within_budget(full, ESTIMATES, budget=36)["command"] == "--strategy lp-ft"  # all layers, fits
    assert within_budget(full, ESTIMATES, budget=25)["command"] == "--strategy head --unfreeze-last 4"
    none = within_budget(HEAD4, ESTIMATES, budget=1)
    assert none["command"] == "--strategy freeze" and "unfreeze_last" not in none
    assert none["reason"].endswith("so --strategy freeze (about 2 s), the cheapest, as none fits")


def test_a_budget_is_for_strategy_auto():
    common = dict(model="resnet18", data="d", out="o")
    assert TrainConfig(**common, strategy="auto", budget=60).budget == 60
    with pytest.raises(ConfigError, match="budget is for strategy auto, which chooses within it"):
        TrainConfig(**common, strategy="full", budget=60)
    with pytest.raises(ConfigError, match="budget"):
        TrainConfig(**common, strategy="auto", budget=0)
