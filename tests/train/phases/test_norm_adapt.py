import torch
from torch.utils.data import TensorDataset

from tests.helpers import TinyNet
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.phases.norm_adapt import adapt_norm_statistics


def test_norm_statistics_are_re_estimated_on_the_new_images():
    torch.manual_seed(0)
    model = TinyNet(num_classes=2).eval()
    images = torch.rand(96, 3, 16, 16) * 4 + 3  # far from what the running statistics (0, 1) describe
    adapt_norm_statistics(model, TensorDataset(images, torch.zeros(96)), lambda x: x, batch_size=32)
    with torch.no_grad():
        first = model.conv1(images)  # the first BatchNorm's input
    bn = model.bn1
    assert torch.allclose(bn.running_mean, first.mean((0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1 and not model.training  # left as it was found


def test_head_first_strategies_re_estimate_before_the_head_phase(tmp_path):
    lines = []
    base = dict(model="tests.helpers:TinyNet", data="builtin:digits", epochs=2, image_size=16)
    settings = dict(precision="fp32", channels_last=False, train_images=200)
    fit(TrainConfig(**base, **settings, out=str(tmp_path / "g"), strategy="gradual"), log=lines.append)
    adapted = [line for line in lines if "BatchNorm statistics re-estimated on 200 training images" in line]
    assert len(adapted) == 1
    assert lines.index(adapted[0]) < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2 [head]"))
    assert any("training on a stratified sample of at most 200 images" in line for line in lines)
    assert any(line.startswith("data: 200 train, 360 val images") for line in lines)
    lines.clear()
    fit(TrainConfig(**base, **settings, out=str(tmp_path / "f"), strategy="freeze"), log=lines.append)
    assert not any("re-estimated" in line for line in lines)  # a frozen extractor keeps the statistics it came with
    frozen = torch.load(tmp_path / "f" / "best.pt", weights_only=False)["model"]
    fresh = TinyNet(num_classes=10).state_dict()
    for name in ("bn1.running_mean", "bn1.running_var", "layer1.1.running_mean", "layer1.1.running_var"):
        assert torch.equal(frozen[name], fresh[name]), name  # the statistics it came with, after two epochs
