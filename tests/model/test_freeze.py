import pytest
import timm
import torch
import torch.nn as nn

from tests.helpers import ALEXNET_HEAD
from transferkit import FreezeError
from transferkit.model.factory import create_model
from transferkit.model.freeze import (
    freeze,
    freeze_backbone,
    freeze_stages,
    frozen_norm_layers,
    held_layers,
    parameter_summary,
    select_parameters,
    stages,
    unfreeze,
)


def trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_alexnet_freeze_features_leaves_exactly_the_classifier():
    model = create_model("torchvision:alexnet", num_classes=10)
    total = sum(p.numel() for p in model.parameters())
    before = parameter_summary(model)
    assert sum(c.trainable for c in before) == total and sum(c.frozen for c in before) == 0
    freeze(model, "features")
    assert trainable(model) == ALEXNET_HEAD
    after = parameter_summary(model)
    assert sum(c.trainable for c in after) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(c.frozen for c in after) == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert {c.module: c.frozen for c in after} == {"features": 2469696, "classifier": 0}


def test_glob_and_regex_patterns(tiny):
    assert select_parameters(tiny, "layer1.*") == ["layer1.0.weight", "layer1.1.weight", "layer1.1.bias"]
    assert select_parameters(tiny, "re:^(conv1|bn1)\\.") == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert select_parameters(tiny, "fc") == ["fc.weight", "fc.bias"]


def test_pattern_selecting_nothing_is_an_error(tiny):
    with pytest.raises(FreezeError, match="'featurez' selects no parameter.*Top-level modules: bn1, conv1, fc, layer1"):
        freeze(tiny, "featurez")
    assert len(trainable(tiny)) == len(list(tiny.parameters()))


def test_frozen_batchnorm_stays_in_eval_after_train(tiny):
    freeze(tiny, ["conv1", "bn1"])
    assert frozen_norm_layers(tiny) == ["bn1"]
    tiny.train()
    stats = {k: v.clone() for k, v in tiny.bn1.state_dict().items()}
    other = tiny.layer1[1].running_mean.clone()
    tiny(torch.randn(4, 3, 16, 16))
    for k, v in tiny.bn1.state_dict().items():
        assert torch.equal(v, stats[k]), k
    assert not tiny.bn1.training
    assert not torch.equal(tiny.layer1[1].running_mean, other)  # the unfrozen BN still trains


def test_train_bn_keeps_batchnorm_training(tiny):
    freeze(tiny, ["conv1", "bn1"], train_bn=True)
    assert trainable(tiny)[:2] == ["bn1.weight", "bn1.bias"]
    assert frozen_norm_layers(tiny) == []
    tiny.train()
    before = tiny.bn1.running_mean.clone()
    tiny(torch.randn(4, 3, 16, 16))
    assert not torch.equal(tiny.bn1.running_mean, before)


def test_unfreeze_releases_batchnorm(tiny):
    freeze(tiny, "*")
    assert len(frozen_norm_layers(tiny)) == 2
    unfreeze(tiny, "bn1")
    assert frozen_norm_layers(tiny) == ["layer1.1"]
    tiny.train()
    before = tiny.bn1.running_mean.clone()
    tiny(torch.randn(4, 3, 16, 16))
    assert not torch.equal(tiny.bn1.running_mean, before)


def test_droppath_of_a_frozen_block_is_held_and_released_with_it():
    model = timm.create_model("test_vit", num_classes=3, img_size=32, drop_path_rate=0.2)
    freeze_backbone(model)
    drops = [p for p, m in model.named_modules() if "DropPath" in type(m).__name__ and m.drop_prob > 0]
    assert drops and held_layers(model) == drops and frozen_norm_layers(model) == []
    model.train()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), model(x))  # the frozen blocks draw nothing: the same output twice
    last = drops[-1].rsplit(".", 1)[0]
    unfreeze(model, last)
    assert last + ".drop_path1" not in held_layers(model)
    assert model.get_submodule(last + ".drop_path1").training
    assert not torch.equal(model(x), model(x))


def test_frozen_parameters_get_no_gradient(tiny):
    freeze_backbone(tiny)
    assert trainable(tiny) == ["fc.weight", "fc.bias"]
    tiny(torch.randn(2, 3, 16, 16)).sum().backward()
    assert tiny.conv1.weight.grad is None and tiny.fc.weight.grad is not None


def test_stages_and_depth_freezing_resnet34():
    model = create_model("resnet34", num_classes=10)
    assert [s[0] for s in stages(model)] == [
        "conv1",
        "layer1.0.conv1",
        "layer2.0.conv1",
        "layer3.0.conv1",
        "layer4.0.conv1",
        "fc",
    ]
    freeze_stages(model, keep_last=2)
    assert {n.split(".")[0] for n in trainable(model)} == {"layer4", "fc"}
    with pytest.raises(FreezeError, match="keep_last must be between 1 and 6"):
        freeze_stages(model, keep_last=7)
    with pytest.warns(UserWarning, match="keep_last=6 keeps all 6 stages of the model trainable: it freezes nothing"):
        assert freeze_stages(model, keep_last=6) == []


def test_stages_of_plain_module(tiny):
    assert stages(tiny) == [["conv1"], ["bn1"], ["layer1"], ["fc"]]


def test_shared_parameter_counted_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert sum(c.trainable for c in parameter_summary(model)) == 20


def test_transformer_stages_hold_root_parameters_and_count_blocks():
    from transferkit.model.factory import create_model
    from transferkit.model.freeze import freeze_stages, stage_parameters

    model = create_model("test_vit", num_classes=3, image_size=32)
    groups = stage_parameters(model)
    assert {"cls_token", "pos_embed"} <= set(groups[0])  # with the patch embedding, where timm puts them
    assert sorted(n for g in groups for n in g) == sorted(n for n, _ in model.named_parameters())
    freeze_stages(model, keep_last=2)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    last_block = len(model.blocks) - 1
    kept = (f"blocks.{last_block}.", "norm.", "head.")
    assert trains == {n for n, _ in model.named_parameters() if n.startswith(kept)}
