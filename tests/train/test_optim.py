import copy

import pytest
import torch
import torch.nn as nn

from tests.helpers import ALEXNET_HEAD
from transferkit import FreezeError, TransferkitError
from transferkit.model.factory import create_model
from transferkit.model.freeze import freeze, freeze_backbone
from transferkit.train.optim import create_optimizer, param_groups


def names(optimizer):
    return [n for g in optimizer.param_groups for n in g["param_names"]]


def test_optimizer_receives_exactly_the_trainable_alexnet_tensors():
    model = create_model("torchvision:alexnet", num_classes=10)
    freeze(model, "features")
    optimizer = create_optimizer(model, "sgd", lr=0.01)
    assert sorted(names(optimizer)) == sorted(ALEXNET_HEAD)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(params) == 6 and all(p.requires_grad for p in params)
    expected = {id(p) for n, p in model.named_parameters() if n in ALEXNET_HEAD}
    assert {id(p) for p in params} == expected


def test_no_weight_decay_on_biases_and_norms(tiny):
    groups = param_groups(tiny, lr=0.1, weight_decay=0.05)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["param_names"]}
    assert decayed == {"conv1.weight", "layer1.0.weight", "fc.weight"}


def test_head_lr_and_layer_decay(tiny):
    groups = param_groups(tiny, lr=1.0, head_lr=10.0, layer_decay=0.5)
    lr_of = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert lr_of["fc.weight"] == 10.0
    assert lr_of["layer1.0.weight"] == 0.5
    assert lr_of["bn1.weight"] == 0.25
    assert lr_of["conv1.weight"] == 0.125


def test_everything_frozen_is_an_error(tiny):
    freeze(tiny, "*")
    with pytest.raises(FreezeError, match="nothing to train"):
        create_optimizer(tiny)


def test_unknown_optimizer(tiny):
    with pytest.raises(TransferkitError, match="Invalid optimizer 'lamb'"):
        create_optimizer(tiny, "lamb")


def test_step_changes_only_trainable(tiny):
    freeze_backbone(tiny)
    frozen = tiny.conv1.weight.clone()
    head = tiny.fc.weight.clone()
    optimizer = create_optimizer(tiny, lr=0.1)
    tiny.train()
    tiny(torch.randn(4, 3, 16, 16)).logsumexp(1).mean().backward()
    optimizer.step()
    assert torch.equal(tiny.conv1.weight, frozen)
    assert not torch.equal(tiny.fc.weight, head)


def test_adam_steps_are_fused_and_match_the_unfused_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    twin = copy.deepcopy(model)
    fused = create_optimizer(model, "adamw", lr=0.1)
    assert fused.defaults["fused"] is True
    reference = torch.optim.AdamW(param_groups(twin, lr=0.1, weight_decay=0.01), lr=0.1, foreach=False)
    x = torch.randn(16, 4)
    for net, opt in ((model, fused), (twin, reference)):
        for _ in range(3):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)


def test_layer_decay_follows_timms_layer_groups():
    from timm.optim import param_groups_layer_decay

    from transferkit.model.factory import create_model
    from transferkit.train.optim import param_groups

    model = create_model("test_vit", num_classes=3, image_size=32)
    ours = {n: g["lr"] for g in param_groups(model, lr=1e-3, layer_decay=0.5) for n in g["param_names"]}
    names = {id(p): n for n, p in model.named_parameters()}
    timms = {names[id(p)]: g["lr_scale"] for g in param_groups_layer_decay(model, layer_decay=0.5) for p in g["params"]}
    assert ours.keys() == timms.keys()
    for name, scale in timms.items():
        assert ours[name] == pytest.approx(1e-3 * scale), name
    assert ours["head.weight"] == pytest.approx(1e-3) and ours["cls_token"] < ours["blocks.0.attn.qkv.weight"]
