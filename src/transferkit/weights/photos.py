"""scikit-image's sample photos (a cat, an espresso, a rocket, an astronaut): natural images that install offline.

Loaded weights are checked on them: their BatchNorm statistics, and which ImageNet classes they predict.
"""

from __future__ import annotations

__all__ = ["sample_photos"]


def sample_photos(channels: int) -> list:
    """The photos as PIL images, in RGB for 3 channels, else grey."""
    from PIL import Image
    from skimage import data

    mode = "RGB" if channels == 3 else "L"
    return [
        Image.fromarray(getattr(data, name)()).convert(mode) for name in ("chelsea", "coffee", "rocket", "astronaut")
    ]
