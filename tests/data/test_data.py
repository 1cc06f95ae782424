import errno
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import make_image_folder
from transferkit import TransferkitError
from transferkit.data.decode import decode
from transferkit.data.images import read_image
from transferkit.data.preprocess import Preprocessing
from transferkit.data.sources import open_data, split_items
from transferkit.errors import DataError, ImageReadError

PRE = Preprocessing((3, 16, 16), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)


def add_bad_files(folder):
    good = folder / "0.png"
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    (folder / "truncated.png").write_bytes(good.read_bytes()[:60])
    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(folder / "deep.png")  # mode I;16
    return {"empty.png", "notes.txt", "truncated.png", "deep.png"}


def test_folder_split_is_stratified(tmp_path):
    make_image_folder(tmp_path, per_class=10)
    source = open_data(str(tmp_path))
    assert source.class_names == ["cat", "dog"] and len(source.train) == 20 and source.val is None
    train, val = split_items(source.train, val_fraction=0.2, seed=0)
    assert sorted(i.label for i in val) == [0, 0, 1, 1]
    assert split_items(source.train, val_fraction=0.2, seed=0)[1][0].name == val[0].name


def test_train_val_folders_and_csv(tmp_path):
    make_image_folder(tmp_path / "d" / "train")
    make_image_folder(tmp_path / "d" / "val", per_class=2)
    source = open_data(str(tmp_path / "d"))
    assert len(source.train) == 12 and len(source.val) == 4
    csv = tmp_path / "d" / "list.csv"
    csv.write_text("path,label\ntrain/cat/0.png,cat\ntrain/dog/0.png,dog\n/nonexistent.png,dog\n")
    source = open_data(str(csv))
    assert source.class_names == ["cat", "dog"] and len(source.train) == 2
    # The missing file is listed with its line, not dropped silently and not a crash.
    assert source.skipped == [("/nonexistent.png (line 4)", "file does not exist")]


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "dev", "Valid"])
def test_validation_folder_names(tmp_path, val_name):
    make_image_folder(tmp_path / "train")
    make_image_folder(tmp_path / val_name, per_class=2)
    make_image_folder(tmp_path / "test", per_class=3)
    source = open_data(str(tmp_path))
    assert (len(source.train), len(source.val), len(source.test)) == (12, 4, 6)
    assert source.folders == {"train": "train", "val": val_name, "test": "test"}


@pytest.mark.parametrize(
    "folders, message",
    [
        (("train", "valid", "extra"), "folder 'extra' beside 'train' that is no split"),
        (("train", "val", "valid"), "several val folders \\(val, valid\\)"),
        (("valid", "test"), "has test, valid but no train folder"),
    ],
)
def test_unknown_or_ambiguous_split_folders_are_errors(tmp_path, folders, message):
    for name in folders:
        make_image_folder(tmp_path / name, per_class=2)
    with pytest.raises(DataError, match=message):
        open_data(str(tmp_path))


def test_csv_split_column(tmp_path):
    make_image_folder(tmp_path, per_class=4)
    rows = ["file,split,class"]
    for cls in ("cat", "dog"):
        rows += [
            f"{cls}/0.png,train,{cls}",
            f"{cls}/1.png,train,{cls}",
            f"{cls}/2.png,valid,{cls}",
            f"{cls}/3.png,test,{cls}",
        ]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    source = open_data(str(tmp_path / "list.csv"))
    assert (len(source.train), len(source.val), len(source.test)) == (4, 2, 2)
    (tmp_path / "bad.csv").write_text("path,label,split\ncat/0.png,cat,holdout\n")
    with pytest.raises(DataError, match="line 2 has split 'holdout'; use train, val or test"):
        open_data(str(tmp_path / "bad.csv"))


def test_bad_images_are_skipped_and_listed(tmp_path):
    make_image_folder(tmp_path)
    bad = add_bad_files(tmp_path / "cat")
    decoded = decode(open_data(str(tmp_path)).train, PRE)
    assert {n.rsplit("/", 1)[-1] for n, _ in decoded.skipped} == bad
    assert decoded.images.shape == (12, 3, 16, 16) and decoded.images.dtype.is_floating_point is False
    reasons = dict((n.rsplit("/", 1)[-1], r) for n, r in decoded.skipped)
    assert "empty" in reasons["empty.png"] and "unsupported mode I;16" in reasons["deep.png"]


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(path)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: make_image_folder(p, classes=("only",)), "single class"),
        (lambda p: (make_image_folder(p), (p / "empty").mkdir()), "holds no usable files"),
    ],
)
def test_bad_data(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        open_data(str(root))


def test_builtin_data():
    digits = open_data("builtin:digits")
    assert len(digits.train) == 1797 and digits.class_names[3] == "3"
    faces = open_data("builtin:faces")
    assert faces.class_names == ["face", "not_face"] and len(faces.train) == 200
    with pytest.raises(DataError, match="Unknown built-in data"):
        open_data("builtin:imagenet")


def test_fingerprint_changes_with_files(tmp_path):
    make_image_folder(tmp_path)
    before = open_data(str(tmp_path)).fingerprint()
    Image.fromarray(np.full((20, 20, 3), 7, dtype=np.uint8)).save(tmp_path / "cat" / "0.png")
    assert open_data(str(tmp_path)).fingerprint() != before


def test_builtin_arrays_are_cached(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = open_data("builtin:digits")
    cached = list((tmp_path / "transferkit").iterdir())
    assert [p.name.split("-")[0] for p in cached] == ["digits"]
    again = open_data("builtin:digits")
    assert again.fingerprint() == first.fingerprint()
    cached[0].write_bytes(b"garbage")  # an unreadable cache is read again from the package
    assert open_data("builtin:digits").fingerprint() == first.fingerprint()
    assert os.path.getsize(cached[0]) > 1000


def test_images_beyond_the_memory_budget_are_memory_mapped(tmp_path):
    make_image_folder(tmp_path / "data", per_class=4)
    items = open_data(str(tmp_path / "data")).train
    in_memory = decode(items, PRE)
    assert in_memory.storage == "in memory"
    mapped = decode(items, PRE, spill_dir=tmp_path / "spill", max_memory_bytes=1000)
    assert mapped.storage.startswith("memory-mapped")
    assert mapped.images.untyped_storage().filename.startswith(str(tmp_path / "spill"))
    assert torch.equal(mapped.images, in_memory.images) and torch.equal(mapped.labels, in_memory.labels)
    assert list((tmp_path / "spill").iterdir()) == []  # removed at once: the space is freed with the tensor
    # Without a folder to spill into, the images are streamed instead of refused.
    assert decode(items, PRE, max_memory_bytes=1000).storage.startswith("streamed from disk")


def test_a_full_disk_is_an_error_not_a_crash(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    make_image_folder(tmp_path / "data", per_class=2)
    items = open_data(str(tmp_path / "data")).train
    with pytest.raises(TransferkitError, match="Not enough disk space"):
        decode(items, PRE, spill_dir=tmp_path / "spill", max_memory_bytes=10)
    assert list((tmp_path / "spill").iterdir()) == []


def test_without_block_reservation_the_free_space_is_checked(tmp_path, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    make_image_folder(tmp_path / "data", per_class=2)
    items = open_data(str(tmp_path / "data")).train
    mapped = decode(items, PRE, spill_dir=tmp_path / "spill", max_memory_bytes=10)
    assert mapped.storage.startswith("memory-mapped") and torch.equal(mapped.images, decode(items, PRE).images)

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    # A disk seen full beforehand: the images are streamed.
    assert decode(items, PRE, spill_dir=tmp_path / "spill", max_memory_bytes=10).storage.startswith("streamed")
    # Filled between that look and the reservation: the reservation's own check reports it.
    monkeypatch.setattr("transferkit.data.decode._disk_can_hold", lambda folder, nbytes: True)
    with pytest.raises(TransferkitError, match="Not enough disk space"):
        decode(items, PRE, spill_dir=tmp_path / "spill", max_memory_bytes=10)
