"""Decoded images in memory, memory-mapped, or streamed when neither memory nor disk holds them."""

import torch

from tests.helpers import make_image_folder
from transferkit.data.decode import ImageDataset, LazyImages, decode, loader_workers
from transferkit.data.preprocess import Preprocessing
from transferkit.data.sources import open_data

PRE = Preprocessing((3, 16, 16), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, "center")


def test_streamed_images_equal_decoded_ones_and_bad_files_are_still_listed(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "data", per_class=5)
    (tmp_path / "data" / "cat" / "broken.png").write_bytes(b"not a png")
    items = open_data(str(tmp_path / "data")).train
    eager = decode(items, PRE)
    monkeypatch.setattr("transferkit.data.decode._disk_can_hold", lambda folder, nbytes: False)
    streamed = decode(items, PRE, spill_dir=tmp_path, max_memory_bytes=100)
    assert isinstance(streamed.images, LazyImages) and streamed.storage.startswith("streamed from disk")
    assert [name for name, _ in streamed.skipped] == [name for name, _ in eager.skipped] and len(eager.skipped) == 1
    assert torch.equal(streamed.labels, eager.labels) and streamed.names == eager.names
    assert torch.equal(streamed.images[:], eager.images) and torch.equal(streamed.images[3], eager.images[3])
    assert loader_workers(ImageDataset(streamed)) >= 1 and loader_workers(ImageDataset(eager)) == 0


def test_training_on_streamed_images_matches_training_in_memory(tmp_path, monkeypatch):
    """freeze caches the frozen layers' output: computed by workers from streamed images, it is the same."""
    from transferkit.train.config import TrainConfig
    from transferkit.train.engine import fit

    make_image_folder(tmp_path / "data", per_class=10)

    def run(name):
        config = TrainConfig(
            model="tests.helpers:TinyNet",
            data=str(tmp_path / "data"),
            out=str(tmp_path / name),
            strategy="freeze",
            epochs=2,
            image_size=16,
            precision="fp32",
            channels_last=False,
        )
        logged = []
        return fit(config, log=logged.append), logged

    in_memory, _ = run("memory")
    monkeypatch.setattr("transferkit.train.setup.memory_budget", lambda: 1000)
    monkeypatch.setattr("transferkit.data.decode._disk_can_hold", lambda folder, nbytes: False)
    streamed, logged = run("streamed")
    assert any("train images streamed from disk" in m for m in logged), logged
    assert [r["val_loss"] for r in streamed["epochs"]] == [r["val_loss"] for r in in_memory["epochs"]]
