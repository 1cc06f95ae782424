"""What the inference tests share: a tiny run trained once per module."""

import pytest

from tests.helpers import make_image_folder, tiny_config
from transferkit.train.engine import fit


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, its image folder): TinyNet, 2 epochs on 10 dark and 10 bright 16 px images (cat, dog)."""
    root = tmp_path_factory.mktemp("runs")
    data = make_image_folder(root / "data", per_class=10, size=16)
    fit(tiny_config(data, root / "run", epochs=2, lr=0.05), log=lambda m: None)
    return root / "run", data
