"""train/phase.py: what one phase trains, with which rates and augmentation, before its epochs."""

import torch

from tests.helpers import TinyNet, tiny_config
from transferkit.train.phases.phase import apply_configured_phase, augment_for, phase_optimizer, trainable_text


def trained(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def held(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and not m.training]


def test_each_phase_of_lp_ft_trains_what_it_says_with_its_own_rate(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "run", strategy="lp-ft", epochs=4, head_lr=0.05)
    model = TinyNet(num_classes=3).train()
    probe, finetune = config.phases()
    apply_configured_phase(model, config, probe, "fc")
    assert trained(model) == ["fc.weight", "fc.bias"] and held(model) == ["bn1", "layer1.1"]
    optimizer = phase_optimizer(model, config, probe)
    names = [n for group in optimizer.param_groups for n in group["param_names"]]
    assert sorted(names) == ["fc.bias", "fc.weight"] and {g["lr"] for g in optimizer.param_groups} == {0.05}
    assert trainable_text(model) == f"{3 * 16 + 3:,} of {sum(p.numel() for p in model.parameters()):,} parameters train"
    apply_configured_phase(model, config, finetune, "fc")
    assert len(trained(model)) == 8 and held(model) == []  # everything trains; BatchNorm released
    rates = {n: g["lr"] for g in phase_optimizer(model, config, finetune).param_groups for n in g["param_names"]}
    assert rates["conv1.weight"] == finetune.lr == probe.lr / 10 and rates["fc.weight"] == 0.05


def test_augmentation_auto_keeps_a_frozen_prefix_cacheable(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "run", strategy="gradual", epochs=4)
    head, unfrozen = config.phases()
    assert (augment_for(config, head), augment_for(config, unfrozen)) == ("none", "light")
    chosen = tiny_config(tmp_path, tmp_path / "run", strategy="gradual", epochs=4, augment="standard")
    assert augment_for(chosen, head) == "standard"
