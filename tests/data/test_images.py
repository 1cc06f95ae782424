import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.data.decode import decode
from transferkit.data.images import read_image, read_pixels
from transferkit.data.items import Item
from transferkit.data.preprocess import Preprocessing
from transferkit.errors import ImageReadError


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


def _photo(path, mode="RGB", size=(50, 38), **save):
    """A smooth photo-like JPEG (gradients, not noise) of ``size`` in ``mode``."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    pixels = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y) * 127 // sum(size)], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    (image if mode == "RGB" else image.convert(mode)).save(path, format="JPEG", quality=90, **save)


@pytest.mark.parametrize(
    "file_mode, mode, orientation",
    [
        ("RGB", "RGB", 1),
        ("RGB", "RGB", 6),
        ("RGB", "RGB", 8),
        ("RGB", "RGB", 3),
        ("L", "L", 1),
        ("L", "RGB", 6),
        ("RGB", "L", 1),
    ],
)
def test_read_pixels_gives_pils_pixels_upright(tmp_path, file_mode, mode, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    _photo(tmp_path / "p.jpg", file_mode, exif=exif)
    expected = np.asarray(read_image(tmp_path / "p.jpg", mode=mode))  # (H, W[, C])
    got = read_pixels(tmp_path / "p.jpg", mode=mode)  # (C, H, W) uint8
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy().reshape(expected.shape), expected)


def test_read_pixels_reads_other_formats_through_pil(tmp_path):
    Image.fromarray(np.full((5, 7, 4), 200, dtype=np.uint8), "RGBA").save(tmp_path / "p.png")
    got = read_pixels(tmp_path / "p.png")
    assert got.shape == (3, 5, 7) and int(got.min()) == 200


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:200] + b"\0" * 400, "Cannot read image"),
        (lambda data: b"", "empty"),
    ],
)
def test_read_pixels_refuses_damaged_jpegs_in_pils_words(tmp_path, damage, message):
    _photo(tmp_path / "good.jpg", size=(300, 200))
    (tmp_path / "bad.jpg").write_bytes(damage((tmp_path / "good.jpg").read_bytes()))
    with pytest.raises(ImageReadError, match=message):
        read_pixels(tmp_path / "bad.jpg")


def test_read_pixels_refuses_a_decompression_bomb_before_decoding(tmp_path, monkeypatch):
    _photo(tmp_path / "p.jpg", size=(300, 200))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_pixels(tmp_path / "p.jpg")


def test_threaded_decode_keeps_the_order_and_lists_bad_files(tmp_path, monkeypatch):
    import transferkit.data.decode as decode_module

    items = []
    for i in range(40):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(np.full((30, 40, 3), i * 6, dtype=np.uint8)).save(path, quality=95)
        items.append(Item(f"{i}.jpg", i % 2, path=path))
    (tmp_path / "7.jpg").write_bytes(b"not an image")
    pre = Preprocessing((3, 16, 16), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, "center")
    monkeypatch.setattr(decode_module, "decode_workers", lambda: 3)
    decoded = decode(items, pre)
    assert decoded.workers == 3 and decoded.seconds > 0
    assert [name for name, _ in decoded.skipped] == ["7.jpg"]
    kept = [i for i in range(40) if i != 7]
    assert decoded.names == [f"{i}.jpg" for i in kept]
    assert decoded.labels.tolist() == [i % 2 for i in kept]
    means = decoded.images.float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(means, torch.tensor([i * 6.0 for i in kept]), atol=1.5, rtol=0)


def test_read_pixels_falls_back_to_pil_without_torchcodec(tmp_path, monkeypatch):
    import transferkit.data.images as images

    _photo(tmp_path / "p.jpg")
    monkeypatch.setattr(images, "_jpeg_decoder", lambda: None)  # as where TorchCodec cannot load
    got = read_pixels(tmp_path / "p.jpg")
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), np.asarray(read_image(tmp_path / "p.jpg")))
