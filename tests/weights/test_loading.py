import pytest
import torch
import torchvision

from tests.helpers import TinyNet
from transferkit import LoadError
from transferkit.weights.loading import LoadPolicy, load_pretrained


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
        load_pretrained(TinyNet(), state, policy=LoadPolicy(strict=True))


def test_dry_run_reports_without_loading():
    model = TinyNet()
    before = model.fc.weight.clone()
    report = load_pretrained(model, TinyNet().state_dict(), policy=LoadPolicy(dry_run=True))
    assert not report.applied and report.loaded_fraction == 1.0
    torch.testing.assert_close(model.fc.weight, before)


RENAMED_RESNET = """
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.act(self.n1(self.c1(x)))
        return self.act(self.n2(self.c2(out)) + identity)


class MyResNet(nn.Module):
    def __init__(self, depths=(3, 4, 6, 3), num_classes=1000):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.stem_norm = nn.BatchNorm2d(64)
        self.stem_pool = nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, (depth, cout) in enumerate(zip(depths, (64, 128, 256, 512))):
            blocks = [Block(cin, cout, 1 if i == 0 else 2)] + [Block(cout, cout) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.stages(self.stem_pool(self.stem_norm(self.stem_conv(x))))
        return self.classifier(self.pool(x).flatten(1))


def resnet34(num_classes=1000):
    return MyResNet((3, 4, 6, 3), num_classes)
"""


def test_torchvision_resnet34_into_renamed_copy(tmp_path):
    from transferkit.model.factory import create_model

    (tmp_path / "model.py").write_text(RENAMED_RESNET)
    torch.manual_seed(0)
    reference = torchvision.models.resnet34().eval()
    with torch.no_grad():  # non-trivial statistics, so a misplaced BatchNorm buffer shows
        for name, buf in reference.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)

    model = create_model(f"{tmp_path / 'model.py'}:resnet34")
    report = load_pretrained(model, path)
    assert report.how_counts == {"structure": len(reference.state_dict())}
    assert report.loaded_fraction == 1.0 and not report.missing and not report.unexpected
    pairs = {m.key: m.source for m in report.matched}
    assert pairs["stages.1.0.shortcut.1.running_var"] == "layer2.0.downsample.1.running_var"
    assert pairs["classifier.weight"] == "fc.weight"
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_resnet18_into_resnet34_fails_clearly(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    model = torchvision.models.resnet34()
    before = model.layer1[0].conv1.weight.clone()
    with pytest.raises(
        LoadError, match=r"would leave 48 parameter tensors outside the head random \(first: layer1.2.conv1.weight\)"
    ):
        load_pretrained(model, path)
    torch.testing.assert_close(model.layer1[0].conv1.weight, before)
    report = load_pretrained(model, path, policy=LoadPolicy(allow_partial=True))
    assert report.partial[0] == "layer1.2.conv1.weight"


def test_grayscale_first_conv_is_adapted(tmp_path):
    rgb = TinyNet(in_chans=3)
    gray = TinyNet(in_chans=1)
    report = load_pretrained(gray, rgb.state_dict())
    assert report.how_counts == {"name": len(rgb.state_dict()) - 1, "adapted": 1}
    torch.testing.assert_close(gray.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_weights_are_refused_and_load_nothing(bad):
    source, target = TinyNet(), TinyNet()
    state = source.state_dict()
    state["layer1.0.weight"][0, 0, 0, 0] = bad
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(LoadError, match=r"NaN or infinite values in 1 tensors \(first: layer1.0.weight, 1 of 1,152"):
        load_pretrained(target, state)
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, before[key])
    report = load_pretrained(target, state, policy=LoadPolicy(allow_nonfinite=True))
    assert report.nonfinite == ["layer1.0.weight"] and any("allow_nonfinite" in n for n in report.notes)


def test_integer_tensors_into_float_parameters_are_noted():
    state = TinyNet().state_dict()
    state["fc.weight"] = torch.ones(5, 16, dtype=torch.int64)
    report = load_pretrained(TinyNet(), state)
    assert report.converted == ["fc.weight: int64 -> float32"]
    assert "converted between integer and floating point" in report.notes[0]
