"""Decode image files safely: one function that every reader of images goes through."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError

__all__ = ["ImageReadError", "read_image", "resize_center_crop"]

# Modes that convert to 8-bit RGB or L without losing their meaning; 16-bit and float images
# would be silently clipped.
_SUPPORTED_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La"}


def read_image(path: str | Path, *, mode: str = "RGB") -> Image.Image:
    """The image at ``path`` converted to ``mode`` ("RGB" or "L").

    The EXIF orientation is applied, so that a phone photo is upright. Raises
    :class:`ImageReadError` for a missing, empty, truncated or non-image file, a FIFO or other
    non-regular file, a decompression bomb, or a mode that does not convert to 8 bits.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"Image '{path}' does not exist.")
    if not path.is_file():
        raise ImageReadError(f"Image '{path}' is not a regular file.")
    if path.stat().st_size == 0:
        raise ImageReadError(f"Image '{path}' is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            # Above PIL's pixel limit: refuse rather than decode gigapixels.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.mode not in _SUPPORTED_MODES:
                    raise ImageReadError(f"Image '{path}' has unsupported mode {img.mode}; convert it to 8-bit RGB.")
                img.load()
                # Phones store pixels as the sensor saw them and the rotation in EXIF; apply it.
                upright = ImageOps.exif_transpose(img)
                return upright.convert(mode)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"Image '{path}' refused as a decompression bomb: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"Cannot read image '{path}': {e}") from None


def resize_center_crop(img: Image.Image, size: int, *, crop_pct: float, interpolation: str) -> np.ndarray:
    """Resize the short side to ``size / crop_pct`` and take the centre ``size`` square, as timm's eval transform.

    Returns a uint8 array (H, W, C) or (H, W).
    """
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(
        interpolation, Image.BICUBIC
    )
    scale = size / crop_pct
    w, h = img.size
    if w <= h:
        new_w, new_h = round(scale), round(scale * h / w)
    else:
        new_w, new_h = round(scale * w / h), round(scale)
    img = img.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))
