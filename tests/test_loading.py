import pytest
import torch
import torchvision

from transferkit import LoadError
from transferkit.loading import load_pretrained

from tests.helpers import TinyNet


def test_dataparallel_keys_load_fully(tmp_path):
    source = TinyNet()
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    target = TinyNet()
    report = load_pretrained(target, path)
    assert report.loaded_fraction == 1.0
    assert not report.missing and not report.unexpected and not report.mismatched
    assert report.stripped_prefixes == ["module."]
    for k, v in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[k], v)


def test_1000_class_checkpoint_into_10_class_model(tmp_path):
    torch.manual_seed(0)
    pretrained = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(pretrained.state_dict(), path)
    model = torchvision.models.resnet18(num_classes=10)
    head_before = model.fc.weight.clone()
    report = load_pretrained(model, path)
    assert [(m.key, m.source_shape, m.model_shape) for m in report.mismatched] == [
        ("fc.weight", (1000, 512), (10, 512)),
        ("fc.bias", (1000,), (10,)),
    ]
    assert len(report.matched) == len(pretrained.state_dict()) - 2
    assert not report.missing and not report.unexpected
    assert report.backbone_fraction == 1.0
    expected = 1 - 5130 / sum(p.numel() for p in model.parameters())
    assert report.loaded_fraction == pytest.approx(expected)
    torch.testing.assert_close(model.layer4[1].conv2.weight, pretrained.layer4[1].conv2.weight)
    torch.testing.assert_close(model.fc.weight, head_before)


def test_container_prefix_is_matched():
    source = TinyNet()
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    report = load_pretrained(TinyNet(), state)
    assert report.how_counts == {"prefix": len(state)}


def test_too_little_loads_fails_and_changes_nothing():
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoadError, match="another architecture"):
        load_pretrained(model, {"fc.bias": torch.zeros(5), "unrelated.weight": torch.ones(3)})
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_strict_lists_the_problem():
    state = TinyNet().state_dict()
    state["extra.weight"] = torch.ones(1)
    with pytest.raises(LoadError, match="1 unexpected"):
        load_pretrained(TinyNet(), state, strict=True)


def test_dry_run_reports_without_loading():
    model = TinyNet()
    before = model.fc.weight.clone()
    report = load_pretrained(model, TinyNet().state_dict(), dry_run=True)
    assert not report.applied and report.loaded_fraction == 1.0
    torch.testing.assert_close(model.fc.weight, before)
