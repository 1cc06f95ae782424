import pytest

from transferkit.errors import ConfigError
from transferkit.train.config import TrainConfig, describe, setting_default

BASE = dict(model="resnet18", data="builtin:digits", out="runs/a")


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("lr", -1.0, r"lr must be in \(0, inf\), got -1.0"),
        ("lr", 0.0, r"lr must be in \(0, inf\), got 0.0"),
        ("lr", float("nan"), "lr must be a finite number, got nan"),
        ("head_lr", 0.0, r"head_lr must be in \(0, inf\)"),
        ("label_smoothing", 2.0, r"label_smoothing must be in \[0, 1\), got 2.0"),
        ("label_smoothing", -0.5, r"label_smoothing must be in \[0, 1\)"),
        ("image_size", -8, r"image_size must be in \[8, inf\), got -8"),
        ("image_size", 0, r"image_size must be in \[8, inf\), got 0"),
        ("image_size", 1, r"image_size must be in \[8, inf\)"),
        ("cache_views", -1, r"cache_views must be in \[0, inf\)"),
        ("epochs", 0, r"epochs must be in \[1, inf\)"),
        ("epochs", 2.5, "epochs must be a whole number"),
        ("batch_size", 0, r"batch_size must be in \[1, inf\)"),
        ("val_fraction", 1.0, r"val_fraction must be in \(0, 1\)"),
        ("warmup_fraction", 1.0, r"warmup_fraction must be in \[0, 1\)"),
        ("layer_decay", 1.5, r"layer_decay must be in \(0, 1\]"),
        ("weight_decay", -0.1, r"weight_decay must be in \[0, inf\)"),
        ("min_loaded", 1.2, r"min_loaded must be in \[0, 1\]"),
        ("strategy", "warp", "strategy must be one of auto, full, freeze, .*, lora, dora, bitfit, got 'warp'"),
        ("optimizer", "lamb", "optimizer must be one of adamw, adam, sgd"),
        ("precision", "int8", "precision must be one of auto, fp32, bf16, fp16"),
        ("augment", "heavy", "augment must be one of auto, none, light, standard"),
        ("device", "tpu", "device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_each_setting_is_checked_once_at_construction(setting, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrainConfig(**BASE, **{setting: value})
    assert caught.value.argument == setting


def test_strategies_that_need_more_settings_say_so():
    with pytest.raises(ConfigError, match="needs freeze patterns or unfreeze_last"):
        TrainConfig(**BASE, strategy="head")
    with pytest.raises(ConfigError, match="epochs must be at least 2 for strategy 'gradual'"):
        TrainConfig(**BASE, strategy="gradual", epochs=1)
    assert TrainConfig(**BASE, strategy="head", unfreeze_last=2).unfreeze_last == 2


def test_unknown_keys_are_rejected_and_a_saved_config_round_trips():
    with pytest.raises(ConfigError, match="Unknown training settings: colour"):
        TrainConfig.from_dict({**BASE, "colour": 1})
    config = TrainConfig(**BASE, strategy="lp-ft", lr=0.02, freeze=("layer1",))
    assert config.freeze == ["layer1"]
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_phases_follow_the_rates_that_were_given():
    phases = TrainConfig(**BASE, strategy="gradual", epochs=4, lr=5e-4, layer_decay=0.5).phases()
    assert [(p.name, p.epochs, p.lr, p.layer_decay) for p in phases] == [
        ("head", 1, 1e-2, None),
        ("unfrozen", 3, 5e-4, 0.5),
    ]
    default = TrainConfig(**BASE, strategy="gradual", epochs=4).phases()
    assert default[1].layer_decay is None  # every layer at one rate unless asked


def test_defaults_and_help_come_from_the_fields():
    assert setting_default("epochs") == 5 and setting_default("device") == "auto"
    assert setting_default("freeze") == [] and setting_default("freeze") is not setting_default("freeze")
    assert "label smoothing" in describe("label_smoothing").lower()
