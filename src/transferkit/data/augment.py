"""Training-time augmentations by name; the names import nothing heavy, so configuration can check them."""

from __future__ import annotations

from ..errors import DataError

__all__ = ["AUGMENTATIONS", "augmentation"]

AUGMENTATIONS = ("none", "light", "standard")


def augmentation(name: str, size: int):
    """A per-image transform on uint8 (C, H, W) tensors; ``none`` is deterministic."""
    if name == "none":
        return None
    from torchvision.transforms import v2

    if name == "light":
        # Small crops and aspect changes; no flips, which would change digits and text.
        return v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18), antialias=True)
    if name == "standard":
        return v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(0.3, 0.3, 0.3),
            ]
        )
    raise DataError(f"Unknown augmentation '{name}'; choose one of {', '.join(AUGMENTATIONS)}.")
