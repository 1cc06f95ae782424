import pytest
import torch.nn as nn

from transferkit import ModelSpecError
from transferkit.model.factory import create_model

USER_MODEL = """
import torch.nn as nn

class Small(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(self.flat(self.pool(self.conv(x))))

def small(num_classes=1000):
    return Small(num_classes)

def small_fixed():
    return Small()
"""


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(USER_MODEL)
    return path


def test_timm_and_torchvision():
    assert create_model("resnet18", num_classes=10).fc.out_features == 10
    assert create_model("torchvision:alexnet", num_classes=10).classifier[6].out_features == 10


def test_user_file_factory(model_file):
    assert create_model(f"{model_file}:small", num_classes=7).head.out_features == 7


def test_factory_without_num_classes_gets_a_new_head(model_file):
    model = create_model(f"{model_file}:small_fixed", num_classes=3)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 3


def test_module_factory():
    model = create_model("torchvision.models:resnet18", num_classes=4)
    assert model.fc.out_features == 4


@pytest.mark.parametrize(
    "spec, message",
    [
        ("resnet343", "Unknown model 'resnet343'. Did you mean"),
        ("torchvision:alexnett", "Did you mean torchvision:alexnet"),
        ("missing/model.py:resnet34", "does not exist"),
        ("torchvision.models:nope", "has no callable 'nope'"),
        ("no_such_package.mod:f", "Cannot import module"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        create_model(spec)


def test_factory_not_returning_a_module(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    return 3\n")
    with pytest.raises(ModelSpecError, match="returned int, not a torch.nn.Module"):
        create_model(f"{path}:f")


@pytest.mark.parametrize("spec", ["resnet18", "torchvision:resnet18"])
def test_in_chans(spec):
    import torch

    model = create_model(spec, num_classes=4, in_chans=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_drop_path_builds_timm_stochastic_depth_or_is_refused():
    from timm.layers import DropPath

    rates = [
        m.drop_prob for m in create_model("resnet18", num_classes=3, drop_path=0.2).modules() if isinstance(m, DropPath)
    ]
    # Rising over resnet18's 8 blocks from 0 (no DropPath in the first) to the rate given in the last.
    assert len(rates) == 7 and rates == sorted(rates) and rates[-1] == pytest.approx(0.2)
    assert not any(isinstance(m, DropPath) for m in create_model("resnet18", num_classes=3).modules())
    with pytest.raises(ModelSpecError, match="'vgg11' has no stochastic depth"):
        create_model("vgg11", drop_path=0.1)
    with pytest.raises(ModelSpecError, match="given to timm models"):
        create_model("torchvision:resnet18", drop_path=0.1)
    with pytest.raises(ModelSpecError, match="drop_path must be at least 0 and under 1"):
        create_model("resnet18", drop_path=1.0)
