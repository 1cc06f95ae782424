"""Decode image files safely: every reader of images goes through :func:`read_image` or :func:`read_pixels`.

JPEG files, the common case, are decoded by TorchCodec's libjpeg-turbo decoder straight into a
tensor (the same pixels as PIL, faster, and no PIL image to convert); every other format, and
any JPEG that decoder refuses, goes through PIL, whose verdict is final.
"""

from __future__ import annotations

import functools
import io
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from ..errors import ImageReadError

__all__ = ["ImageReadError", "pixels_of_bytes", "read_image", "read_pixels"]

# Modes that convert to 8-bit RGB or L without losing their meaning; 16-bit and float images
# would be silently clipped.
_SUPPORTED_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La"}


def _checked(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"Image '{path}' does not exist.")
    if not path.is_file():
        raise ImageReadError(f"Image '{path}' is not a regular file.")
    if path.stat().st_size == 0:
        raise ImageReadError(f"Image '{path}' is empty (0 bytes).")
    return path


@contextmanager
def _opened(path: Path | str, source=None):
    """PIL's lazy open (the header only) with a decompression bomb refused, and PIL's errors as one ImageReadError.

    ``source`` is a file object to read instead of ``path``, which then only names the image in messages.
    """
    try:
        with warnings.catch_warnings():
            # Above PIL's pixel limit: refuse rather than decode gigapixels.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if source is None else source) as img:
                yield img
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"Image '{path}' refused as a decompression bomb: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        said = str(e) if source is None else str(e).replace(repr(source), f"'{path}'")  # the name, not the buffer
        raise ImageReadError(f"Cannot read image '{path}': {said}") from None


def _converted(img: Image.Image, path: Path | str, mode: str) -> Image.Image:
    """An opened image decoded, upright and in ``mode``; a mode that does not convert to 8 bits is refused."""
    if img.mode not in _SUPPORTED_MODES:
        raise ImageReadError(f"Image '{path}' has unsupported mode {img.mode}; convert it to 8-bit RGB.")
    img.load()
    # Phones store pixels as the sensor saw them and the rotation in EXIF; apply it.
    return ImageOps.exif_transpose(img).convert(mode)


def read_image(path: str | Path, *, mode: str = "RGB") -> Image.Image:
    """The image at ``path`` converted to ``mode`` ("RGB" or "L").

    The EXIF orientation is applied, so that a phone photo is upright. Raises
    :class:`ImageReadError` for a missing, empty, truncated or non-image file, a FIFO or other
    non-regular file, a decompression bomb, or a mode that does not convert to 8 bits.
    """
    path = _checked(path)
    with _opened(path) as img:
        return _converted(img, path, mode)


# (file mode, wanted mode) pairs where libjpeg-turbo's output equals PIL's pixel for pixel; an
# RGB file read as "L" is left to PIL, whose luma is computed from RGB, not taken from the Y plane.
_SAME_AS_PIL = {("RGB", "RGB"), ("L", "L"), ("L", "RGB")}


@functools.cache
def _jpeg_decoder():
    """TorchCodec's ``decode_jpeg`` (it applies the EXIF orientation), or None where it cannot load: PIL then."""
    try:
        from torchcodec.decoders import decode_jpeg
    except (ImportError, OSError, RuntimeError):  # not installed, or its library does not load beside this torch
        return None
    return decode_jpeg


def read_pixels(path: str | Path, *, mode: str = "RGB") -> torch.Tensor:
    """The image at ``path`` as a (C, H, W) uint8 tensor, upright, with the checks of :func:`read_image`.

    Example::

        read_pixels("cat.jpg").shape  # torch.Size([3, 375, 500])
    """
    path = _checked(path)
    return _pixels(path, None, path.read_bytes, mode)  # reading the bytes is faster than decoding from the path


def pixels_of_bytes(data: bytes, name: str, *, mode: str = "RGB") -> torch.Tensor:
    """The image file held in ``data`` (a member of a tar shard, named ``name`` in messages), as :func:`read_pixels`
    reads a file: the same decoders, checks and errors."""
    if not data:
        raise ImageReadError(f"Image '{name}' is empty (0 bytes).")
    return _pixels(name, io.BytesIO(data), lambda: data, mode)


def _pixels(path: Path | str, source, raw, mode: str) -> torch.Tensor:
    with _opened(path, source) as img:  # the header: size (bomb check), format and mode
        decode_jpeg = _jpeg_decoder() if img.format == "JPEG" and (img.mode, mode) in _SAME_AS_PIL else None
        if decode_jpeg is not None:
            try:
                data = torch.frombuffer(bytearray(raw()), dtype=torch.uint8)
                return decode_jpeg(data, mode="RGB" if mode == "RGB" else "GRAY")
            except RuntimeError:
                pass  # PIL decides, and says why in its words
        return pil_to_tensor(_converted(img, path, mode))
