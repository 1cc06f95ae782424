"""CSVs of several labels per image and of numbers, on images whose colours give the answer."""

import csv

import numpy as np
from PIL import Image


def colour_images(root, count: int, seed: int = 0):
    """``count`` 16 px PNGs of random red and green intensity (0-255 each, a little noise); returns them."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(count, 2))
    for i, (red, green) in enumerate(colours):
        pixels = np.zeros((16, 16, 3))
        pixels[..., 0], pixels[..., 1] = red, green
        noisy = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"{i}.png")
    return colours


def multilabel_csv(tmp_path, count=240, names=("red", "green", "rare")):
    """Labels ``names`` (default 'red', 'green', 'rare'): the first two where that colour is bright, the third on
    1 in 24 images; some images have none."""
    colours = colour_images(tmp_path, count)
    rows = []
    for i, (red, green) in enumerate(colours):
        names_on = [n for n, on in zip(names, (red > 127, green > 127, i % 24 == 0)) if on]
        rows.append([f"{i}.png", ";".join(names_on)])
    return write_csv(tmp_path / "labels.csv", ["path", "labels"], rows)


def regression_csv(tmp_path, count=240):
    """The target is the red intensity in units of 0-10."""
    colours = colour_images(tmp_path, count)
    rows = [[f"{i}.png", red / 25.5] for i, (red, _) in enumerate(colours)]
    return write_csv(tmp_path / "values.csv", ["path", "target"], rows)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
