"""Training-time augmentations by name; the names import nothing heavy, so configuration can check them.

Each is a per-image transform on uint8 (C, H, W) tensors. ``randaugment`` is timm's RandAugment
(``rand-m9-mstd0.5``, the setting of timm's ImageNet recipes) and ``trivialaugment``
torchvision's TrivialAugmentWide; both follow a random resized crop and a horizontal flip, so
they suit photos, not digits or text. Batch-level MixUp and CutMix are timm's ``Mixup``
(:func:`mixer`).
"""

from __future__ import annotations

from ..errors import DataError

__all__ = ["AUGMENTATIONS", "augmentation", "mixer"]

AUGMENTATIONS = ("none", "light", "standard", "randaugment", "trivialaugment")

# RandAugment's fill colour: ImageNet's mean in 0-255, or its gray for one channel.
_FILL = {3: (124, 116, 104), 1: (118,)}


def augmentation(name: str, size: int | tuple[int, int], *, channels: int = 3):
    """A per-image transform on uint8 (C, H, W) tensors; ``none`` is deterministic (None)."""
    if name == "none":
        return None
    from torchvision.transforms import v2

    if name == "light":
        # Small crops and aspect changes; no flips, which would change digits and text.
        return v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18), antialias=True)
    crop_and_flip = [v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    if name == "standard":
        return v2.Compose([*crop_and_flip, v2.ColorJitter(0.3, 0.3, 0.3)])
    if name == "randaugment":
        from timm.data.auto_augment import rand_augment_transform

        # timm's RandAugment works on PIL images.
        timm_ra = rand_augment_transform("rand-m9-mstd0.5", {"img_mean": _FILL.get(channels, _FILL[3])})
        return v2.Compose([*crop_and_flip, v2.ToPILImage(), timm_ra, v2.PILToTensor()])
    if name == "trivialaugment":
        return v2.Compose([*crop_and_flip, v2.TrivialAugmentWide()])
    raise DataError(f"Unknown augmentation '{name}'; choose one of {', '.join(AUGMENTATIONS)}.")


def mixer(*, mixup: float, cutmix: float, label_smoothing: float, num_classes: int):
    """timm's ``Mixup`` for a batch (inputs, labels) -> (mixed inputs, soft targets); None when both are 0.

    Examples:
        >>> mix = mixer(mixup=0.2, cutmix=1.0, label_smoothing=0.1, num_classes=10)
        >>> x, soft = mix(images, labels)  # soft: (N, 10), rows sum to 1
    """
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    # One of the two per batch when both are on (timm's default switch probability, 0.5).
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)
