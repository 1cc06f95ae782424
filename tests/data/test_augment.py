import pytest
import torch

from transferkit.data.augment import AUGMENTATIONS, augmentation, mixer
from transferkit.errors import ConfigError
from transferkit.train.config import TrainConfig


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_preset_keeps_uint8_images_of_the_size(name, channels):
    torch.manual_seed(0)
    transform = augmentation(name, 24, channels=channels)
    image = torch.randint(0, 256, (channels, 32, 40), dtype=torch.uint8)
    if name == "none":
        assert transform is None
        return
    changed = False
    for _ in range(20):
        out = transform(image)
        assert out.dtype == torch.uint8 and out.shape == (channels, 24, 24)
        changed |= not torch.equal(out, transform(image))
    assert changed  # random: two draws differ


def test_mixer_soft_targets():
    assert mixer(mixup=0, cutmix=0, label_smoothing=0.1, num_classes=4) is None
    mix = mixer(mixup=0.4, cutmix=1.0, label_smoothing=0.1, num_classes=4)
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, soft = mix(x.clone(), y)
    assert mixed.shape == x.shape and soft.shape == (6, 4)
    torch.testing.assert_close(soft.sum(-1), torch.ones(6))
    assert (soft.argmax(-1) != y).any() or (soft.max(-1).values < 0.95).all()  # the targets are mixed


def test_mixing_excludes_the_weighted_loss():
    with pytest.raises(ConfigError, match="balance cannot be weighted with mixup or cutmix"):
        TrainConfig(model="m", data="d", out="o", mixup=0.2, balance="weighted")
    with pytest.raises(ConfigError, match="cutmix must be in"):
        TrainConfig(model="m", data="d", out="o", cutmix=-1)
