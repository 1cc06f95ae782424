import numpy as np
import pytest
from PIL import Image

from transferkit.data.decode import decode
from transferkit.data.images import read_image
from transferkit.data.preprocess import Preprocessing
from transferkit.data.sources import Item


def _phone_photo(path, orientation):
    """A 30x20 photo stored sideways: red on the left half, blue on the right, and an EXIF rotation."""
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:, :15] = (255, 0, 0)
    pixels[:, 15:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, format="JPEG", exif=exif, quality=95)


@pytest.mark.parametrize("orientation, size", [(1, (30, 20)), (6, (20, 30)), (8, (20, 30)), (3, (30, 20))])
def test_exif_orientation_is_applied(tmp_path, orientation, size):
    _phone_photo(tmp_path / "p.jpg", orientation)
    img = read_image(tmp_path / "p.jpg")
    assert img.size == size
    top = np.asarray(img)[1, img.size[0] // 2]
    # Orientation 6 turns the photo clockwise: red (left) ends on top; 8 turns it the other way.
    if orientation == 6:
        assert top[0] > 200 and top[2] < 60
    if orientation == 8:
        assert top[2] > 200 and top[0] < 60


def test_training_decode_sees_the_upright_image(tmp_path):
    _phone_photo(tmp_path / "p.jpg", 6)
    pre = Preprocessing((3, 30, 30), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, "center")
    decoded = decode([Item("p", 0, path=tmp_path / "p.jpg")], pre)
    image = decoded.images[0]  # (C, H, W) uint8, upright: red on the top rows
    assert image[0, 2].float().mean() > 200 and image[2, 2].float().mean() < 60


def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    from transferkit.errors import ImageReadError

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path / "pipe.png")
