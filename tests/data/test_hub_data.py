"""Hugging Face datasets as DATA: a dataset repository served by the stand-in hub on 127.0.0.1, and local
parquet files, saved datasets and imagefolders, built from scikit-learn's real digits."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_config
from tests.weights.stand_in_hub import StandInHub
from transferkit.data.decode import decode, load_item, streamed
from transferkit.data.hub_data import HfOptions
from transferkit.data.items import Item
from transferkit.data.preprocess import Preprocessing
from transferkit.data.sources import open_data
from transferkit.errors import DataError

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

NAMES = ["zero", "one", "two"]

# The dataset card as the Hub shows it: the features (with the class names) and where each split's shards are.
CLASS_FEATURES = """  features:
  - name: image
    dtype: image
  - name: label
    dtype:
      class_label:
        names:
          '0': zero
          '1': one
          '2': two
"""
CARD = f"""---
dataset_info:
- config_name: default
{CLASS_FEATURES}- config_name: mini
{CLASS_FEATURES}"""
CARD += """configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
  - split: test
    path: data/test-*
- config_name: mini
  data_files:
  - split: train
    path: mini/train-*
---
# Digits

Three classes of scikit-learn's digits.
"""


def _digits(per_class: int, offset: int = 0) -> tuple[list[bytes], list[int], list[np.ndarray]]:
    """PNG files of real 8x8 digits 0-2 scaled to 24 px, with their labels and pixels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    files, labels, arrays = [], [], []
    for label in range(3):
        for image in digits.images[digits.target == label][offset : offset + per_class]:
            array = np.kron((image * 255 / 16).round().astype(np.uint8), np.ones((3, 3), np.uint8))
            buffer = io.BytesIO()
            Image.fromarray(array).convert("RGB").save(buffer, format="PNG")
            files.append(buffer.getvalue())
            labels.append(label)
            arrays.append(array)
    return files, labels, arrays


def _parquet(images: list[bytes | None], labels: list, *, paths=None, label_type=None) -> bytes:
    """A parquet file as the Hub holds them: an image struct of bytes and path, and a label column; no
    datasets metadata, so the features come from the dataset card."""
    paths = paths or [None] * len(images)
    image = pa.array(
        [{"bytes": b, "path": p} for b, p in zip(images, paths)],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    buffer = io.BytesIO()
    pq.write_table(pa.table({"image": image, "label": pa.array(labels, type=label_type)}), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """org/digits on a stand-in hub: train in two parquet shards, validation, test, and a second config."""
    hub = StandInHub(tmp_path_factory.mktemp("hub"))
    repo = "datasets/org/digits"
    files, labels, _ = _digits(12)
    hub.add_repo_file(repo, "README.md", CARD.encode())
    hub.add_repo_file(repo, "data/train-00000-of-00002.parquet", _parquet(files[0::2], labels[0::2]))
    hub.add_repo_file(repo, "data/train-00001-of-00002.parquet", _parquet(files[1::2], labels[1::2]))
    val_files, val_labels, _ = _digits(4, offset=12)
    hub.add_repo_file(repo, "data/validation-00000-of-00001.parquet", _parquet(val_files, val_labels))
    hub.add_repo_file(repo, "data/test-00000-of-00001.parquet", _parquet(val_files, [-1] * len(val_files)))
    hub.add_repo_file(repo, "mini/train-00000-of-00001.parquet", _parquet(files[::4], labels[::4]))
    yield hub
    hub.close()


@pytest.fixture
def hub(served, tmp_path, monkeypatch):
    """huggingface_hub and datasets pointed at the stand-in hub, with an empty cache per test."""
    from huggingface_hub import HfFileSystem

    served.point(monkeypatch, tmp_path / "hub-cache")
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", served.url)
    monkeypatch.setattr(
        datasets.config, "HUB_DATASETS_URL", served.url + "/datasets/{repo_id}/resolve/{revision}/{path}"
    )
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    HfFileSystem.clear_instance_cache()
    served.requests.clear()
    yield served
    HfFileSystem.clear_instance_cache()


PRE = Preprocessing(input_size=(3, 24, 24), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)


def test_hub_dataset_splits_classes_and_pixels(hub):
    source = open_data("hf:org/digits")
    assert source.class_names == NAMES  # from the card's ClassLabel, not from the parquet files
    assert (len(source.train), len(source.val)) == (36, 12)
    assert source.test is None and source.skipped == []  # the test split has no labels (-1): left out, said
    assert source.folders == {"train": "split train", "val": "split validation", "unused": "test (no labels)"}
    files, labels, arrays = _digits(12)
    # the two shards interleave the rows: shard 0 holds the even ones
    order = list(range(0, 36, 2)) + list(range(1, 36, 2))
    assert [item.label for item in source.train] == [labels[i] for i in order]
    for item, i in zip(source.train[:3] + source.train[-3:], order[:3] + order[-3:]):
        pixels = load_item(item, PRE)
        assert pixels.shape == (3, 24, 24)
        assert (pixels[0].numpy() == arrays[i]).all()  # PNG round trip: bitwise


def test_hub_config_revision_and_offline_cache(hub, monkeypatch):
    mini = open_data("hf:org/digits", hf=HfOptions(config="mini", revision="v1"))
    assert (len(mini.train), mini.val) == (9, None)
    assert any("/resolve/v1/README.md" in r for r in hub.requests)  # the revision asked for
    open_data("hf:org/digits")  # cached now
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = open_data("hf:org/digits", hf=HfOptions(config="default"))
    assert (len(again.train), len(again.val), again.class_names) == (36, 12, NAMES)
    assert hub.requests == []  # nothing asked of the hub
    with pytest.raises(DataError, match="multiple 'org/digits' configurations in the cache.*name one with --hf-config"):
        open_data("hf:org/digits")  # offline, datasets cannot tell which configuration is the default
    with pytest.raises(DataError, match="cannot be loaded by datasets.*offline"):
        open_data("hf:org/other")


def test_hub_missing_dataset_is_one_line(hub):
    with pytest.raises(DataError) as raised:
        open_data("hf:org/nothing")
    assert "hf:org/nothing" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(DataError, match="hf:ORG/NAME"):
        open_data("hf:a/b/c")


def test_train_on_hub_dataset(hub, cli, tmp_path):
    code, out, err = cli(
        "train", "tests.helpers:TinyNet", "--data", "hf:org/digits", "--out", tmp_path / "run",
        "--epochs", "1", "--image-size", "16", "--precision", "fp32", "--no-channels-last", "--strategy", "full",
    )  # fmt: skip
    assert code == 0, err
    assert "train from 'split train', val from 'split validation'; left out: the dataset's split test" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["class_counts"]["train"] == {"zero": 12, "one": 12, "two": 12}
    code, out, err = cli("eval", tmp_path / "run", "--trust-code", "--json")
    assert code == 0, err
    assert json.loads(out)["images"] == 12


def _local(tmp_path, name, table_bytes):
    path = tmp_path / name
    path.write_bytes(table_bytes)
    return path


def test_parquet_file_with_string_labels_is_split_by_seed(tmp_path):
    files, labels, _ = _digits(6)
    path = _local(tmp_path, "digits.parquet", _parquet(files, [NAMES[label] for label in labels]))
    source = open_data(str(path))
    assert source.class_names == sorted(NAMES) and source.val is None and len(source.train) == 18
    config = tiny_config(path, tmp_path / "run", epochs=1)
    from transferkit.train.setup import prepare_data

    data = prepare_data(config, log=lambda line: None)
    assert (len(data.train), len(data.val)) == (14, 4)


def test_saved_dataset_and_imagefolder_with_metadata(tmp_path):
    files, labels, arrays = _digits(4)
    features = datasets.Features({"img": datasets.Image(), "digit": datasets.ClassLabel(names=NAMES)})
    rows = {"img": [{"bytes": f, "path": None} for f in files], "digit": labels}
    saved = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows, features=features), "valid": datasets.Dataset.from_dict(rows)}
    )
    saved["valid"] = saved["valid"].cast(features)
    saved.save_to_disk(tmp_path / "saved")
    source = open_data(str(tmp_path / "saved"))
    assert source.class_names == NAMES and len(source.val) == 12 and source.folders["val"] == "split valid"

    folder = tmp_path / "imagefolder"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        lines = ["file_name,kind"]
        for i, (data, label) in enumerate(zip(files, labels)):
            (folder / split / f"{i}.png").write_bytes(data)
            lines.append(f"{i}.png,{NAMES[label]}")
        (folder / split / "metadata.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="no label column .*name it with label_column"):
        open_data(str(folder))
    source = open_data(str(folder), hf=HfOptions(label_column="kind"))
    assert source.class_names == sorted(NAMES) and len(source.test) == 12
    decoded = decode(source.train, PRE)  # the images are paths inside the folder: read
    assert decoded.skipped == [] and (decoded.images[0, 0].numpy() == arrays[0]).all()


def test_several_labels_and_numbers(tmp_path):
    files, labels, _ = _digits(3)
    tags = [[label, (label + 1) % 3] for label in labels]
    features = datasets.Features({"image": datasets.Image(), "tags": datasets.List(datasets.ClassLabel(names=NAMES))})
    rows = {"image": [{"bytes": f, "path": None} for f in files], "tags": tags}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "tags.parquet")
    with pytest.raises(DataError, match="train with task multi-label"):
        open_data(str(tmp_path / "tags.parquet"))
    from transferkit.tasks.targets import LabelSpec

    source = open_data(str(tmp_path / "tags.parquet"), LabelSpec("multi-label"))
    assert source.class_names == NAMES and source.train[0].label == (1, 1, 0)
    path = _local(tmp_path, "values.parquet", _parquet(files, [float(v) / 2 for v in labels]))
    with pytest.raises(DataError, match="holds float64, not classes.*task regression"):
        open_data(str(path), hf=HfOptions(label_column="label"))
    source = open_data(str(path), LabelSpec("regression"))
    assert source.task == "regression" and source.train[3].label == 0.5


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda f, l: pa.table({"name": [f"{i}.png" for i in range(len(f))], "label": l}), "no image column"),
        (lambda f, l: pa.table({"image": _images(f), "label": pa.array(l)}), "holds int64, not classes"),
        (lambda f, l: pa.table({"image": _images(f), "y": pa.array([[x] for x in l])}), "task multi-label"),
    ],
)
def test_bad_columns_are_one_line(tmp_path, make, words):
    files, labels, _ = _digits(2)
    pq.write_table(make(files, labels), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=words) as raised:
        open_data(str(tmp_path / "bad.parquet"), hf=HfOptions(label_column="y") if "multi" in words else None)
    assert "\n" not in str(raised.value)


def _images(files):
    return pa.array(
        [{"bytes": b, "path": None} for b in files], pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    )


def test_unreadable_rows_are_skipped_and_listed(tmp_path):
    files, labels, _ = _digits(2)
    secret = tmp_path / "secret.png"
    secret.write_bytes(files[0])
    images = [files[0], b"not an image", None, None, *files[4:]]
    paths = [None, None, str(secret), None, *[None] * len(files[4:])]
    (tmp_path / "data").mkdir()
    path = _local(tmp_path / "data", "d.parquet", _parquet(images, [NAMES[x] for x in labels], paths=paths))
    source = open_data(str(path))
    decoded = decode(source.train, PRE)
    reasons = dict(decoded.skipped)
    assert len(decoded.labels) == len(files) - 3
    assert "Cannot read image" in reasons[source.train[1].name]
    assert "outside DATA's folder" in reasons[source.train[2].name]  # a path elsewhere on this machine: not read
    assert "no bytes" in reasons[source.train[3].name]
    assert isinstance(source.train[0], Item) and source.fingerprint() == open_data(str(path)).fingerprint()


def test_streamed_listing_reads_the_labels_only(hub):
    """A streamed parquet dataset is listed from its label column: its images are not downloaded to list it."""
    rng = np.random.default_rng(0)
    images = [rng.bytes(250_000) for _ in range(40)]  # stand-ins for photos: never decoded here
    for split in ("train", "validation"):
        table = pa.table({"image": _images(images), "label": [NAMES[i % 3] for i in range(40)]})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=10)
        hub.add_repo_file("datasets/org/large", f"data/{split}-00000-of-00001.parquet", buffer.getvalue())
    hub.sent.clear()
    source = open_data("hf:org/large", hf=HfOptions(streaming=True))
    assert (len(source.train), len(source.val), source.class_names) == (40, 40, sorted(NAMES))
    size = len(buffer.getvalue())
    assert set(hub.sent) == {"train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"}
    assert all(sent < size * 0.05 for sent in hub.sent.values()), (hub.sent, size)


def test_streamed_training_from_the_hub(hub, cli, tmp_path):
    runs = []
    for name in ("a", "b"):
        code, out, err = cli(
            "train", "tests.helpers:TinyNet", "--data", "hf:org/digits", "--out", tmp_path / name, "--stream",
            "--epochs", "2", "--image-size", "16", "--precision", "fp32", "--no-channels-last", "--strategy", "full",
            "--batch-size", "8", "--lr", "0.01",
        )  # fmt: skip
        assert code == 0, err
        assert "train images streamed from hf:org/digits train each epoch" in " ".join(out.split())
        with open(tmp_path / name / "metrics.csv", newline="") as f:
            runs.append([{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)])
    assert runs[0] == runs[1]  # the same seed streams the same batches
    source, cached = open_data("hf:org/digits", hf=HfOptions(streaming=True)), open_data("hf:org/digits")
    # the validation split, read from the stream once, is the one decoded from datasets' cache
    val, cached_val = decode(source.val, PRE), decode(cached.val, PRE)
    assert torch.equal(val.images, cached_val.images) and torch.equal(val.labels, cached_val.labels)
    # an epoch streamed by a loader worker: each image comes with its own label
    train = decode(cached.train, PRE)
    epoch = streamed(source.train, PRE).images.epoch_loader(None, batches=4, batch_size=9, seed=3, workers=1)
    seen = []
    for images, labels in epoch:
        for image, label in zip(images, labels):
            same = (train.images == image).flatten(1).all(1).nonzero().flatten()
            assert len(same) == 1 and train.labels[same[0]] == label
            seen.append(int(same[0]))
    assert len(epoch) == 4 and sorted(seen) == list(range(36))  # one pass over the split, shuffled
    assert seen != sorted(seen)


def test_stream_needs_a_validation_split(hub, tmp_path):
    with pytest.raises(DataError, match="no validation split"):
        open_data("hf:org/digits", hf=HfOptions(config="mini", streaming=True))
