import pytest
import torch
import torch.nn as nn
import torchvision

from transferkit import SurgeryError
from transferkit.model.factory import create_model
from transferkit.model.surgery import check_layers, find_head, get_module, replace_head, set_module, validate


def test_find_head_resnet34_and_alexnet():
    assert find_head(torchvision.models.resnet34()) == "fc"
    assert find_head(create_model("resnet34")) == "fc"
    assert find_head(torchvision.models.alexnet()) == "classifier.6"
    assert find_head(create_model("efficientnet_lite0")) == "classifier"
    assert find_head(torchvision.models.mobilenet_v3_small()) == "classifier.3"


@pytest.mark.parametrize("factory", [torchvision.models.resnet34, torchvision.models.alexnet])
def test_replace_head_gives_10_logits(factory):
    model = factory()
    path = replace_head(model, 10)
    assert get_module(model, path).out_features == 10
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 10)


def test_replace_head_keeps_bias_choice(tiny):
    tiny.fc = nn.Linear(16, 5, bias=False)
    replace_head(tiny, 3)
    assert tiny.fc.bias is None and tiny.fc.weight.shape == (3, 16)


def test_broken_middle_conv_names_first_layer_that_disagrees():
    net = torchvision.models.resnet34()
    net.layer2[0].conv1 = nn.Conv2d(64, 256, 3)
    result = validate(net, changed=["layer2.0.conv1"])
    assert not result.ok
    assert result.layer == "layer2.0.bn1"
    assert "expects 128 channels" in result.error
    assert "(1, 256, 54, 54)" in result.error
    assert "layer2.0.conv1" in result.error


def test_attribute_change_is_reported_as_inconsistent():
    model = torchvision.models.alexnet()
    model.classifier[6].out_features = 10
    assert [p for p, _ in check_layers(model)] == ["classifier.6"]
    result = validate(model)
    assert not result.ok and result.layer == "classifier.6"
    assert "(1000, 4096)" in result.error and "out_features=10" in result.error


def test_set_module_rolls_back_a_broken_change(tiny):
    old = tiny.layer1[0]
    with pytest.raises(SurgeryError, match=r"layer1.1") as info:
        set_module(tiny, "layer1.0", nn.Conv2d(8, 32, 3, padding=1))
    assert info.value.layer == "layer1.1"
    assert tiny.layer1[0] is old
    assert validate(tiny).ok


def test_set_module_accepts_a_fitting_layer(tiny):
    set_module(tiny, "fc", nn.Sequential(nn.Dropout(0.1), nn.Linear(16, 7)))
    assert validate(tiny, num_classes=7).ok


def test_validate_checks_number_of_classes(tiny):
    result = validate(tiny, num_classes=10)
    assert not result.ok and "not (N, 10)" in result.error


def test_get_module_bad_path_suggests():
    with pytest.raises(SurgeryError, match="Did you mean"):
        get_module(torchvision.models.resnet18(), "layer5.0")


def test_dry_run_keeps_training_flags(tiny):
    tiny.train()
    tiny.bn1.eval()
    validate(tiny)
    assert tiny.training and tiny.layer1.training and not tiny.bn1.training


def test_a_distilled_models_two_heads_become_one_for_new_classes(tmp_path):
    from transferkit.model.freeze import freeze_backbone
    from transferkit.model.surgery import tie_distillation_head
    from transferkit.train.config import TrainConfig
    from transferkit.train.engine import fit
    from transferkit.train.folder.run_folder import load_run

    model = create_model("levit_128s", num_classes=3, image_size=64).eval()
    assert tie_distillation_head(model) and model.head_dist is model.head
    freeze_backbone(model, head=find_head(model))
    x = torch.randn(2, 3, 64, 64)
    # the output is the class head's alone: no frozen random half
    pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(model(x), model.head(pre_logits))
    lines = []
    config = TrainConfig(
        model="levit_128s", weights="none", data="builtin:digits", strategy="freeze", epochs=1, image_size=64,
        out=str(tmp_path / "run"), precision="fp32", channels_last=False,
    )
    fit(config, log=lines.append)
    assert any(line.startswith("cache: 'forward_head(pre_logits=True)'") for line in lines), lines
    state = load_run(tmp_path / "run")["model"]
    assert torch.equal(state["head.linear.weight"], state["head_dist.linear.weight"])
