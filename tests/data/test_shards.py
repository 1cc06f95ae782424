"""WebDataset shards: written from any DATA by ``transferkit shard``, read back as DATA (``wds:``) image for image."""

import csv
import io
import json
from pathlib import Path

import pytest
import torch
import webdataset as wds

from tests.helpers import make_image_folder, tiny_config
from tests.tasks.csvs import multilabel_csv
from transferkit.data.decode import decode
from transferkit.data.preprocess import Preprocessing
from transferkit.data.shards import parse_size, write_shards
from transferkit.data.sources import open_data
from transferkit.errors import ConfigError, DataError
from transferkit.tasks.targets import LabelSpec
from transferkit.train.engine import fit

PRE = Preprocessing((3, 16, 16), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, "center")


@pytest.fixture
def split_folder(tmp_path):
    """train/ and val/ class folders, with an unreadable file among the training images."""
    make_image_folder(tmp_path / "data" / "train", classes=("cat", "dog"), per_class=9)
    make_image_folder(tmp_path / "data" / "val", classes=("cat", "dog"), per_class=3, seed=1)
    (tmp_path / "data" / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    return tmp_path / "data"


def test_shards_hold_every_split_and_decode_to_the_folders_pixels(split_folder, tmp_path, cli_json):
    index = cli_json("shard", split_folder, tmp_path / "shards", "--shard-size", "2KB")
    assert index["class_names"] == ["cat", "dog"] and set(index["splits"]) == {"train", "val"}
    train_shards = index["splits"]["train"]["shards"]
    assert len(train_shards) > 1 and sum(s["images"] for s in train_shards) == 18
    assert [s["name"].endswith("broken.png") for s in index["skipped"]] == [True]

    folder, shards = open_data(str(split_folder)), open_data(f"wds:{tmp_path / 'shards'}")
    assert shards.class_names == folder.class_names and shards.folders == {"train": "train", "val": "val"}
    assert any("broken.png" in name for name, _ in shards.skipped)  # listed when the shards were written
    for split in ("train", "val"):
        a, b = decode(getattr(folder, split), PRE), decode(getattr(shards, split), PRE)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.names == b.names
    bare = open_data(str(tmp_path / "shards"))  # the folder names them without wds: too
    assert [i.name for i in bare.train] == [i.name for i in shards.train]


def test_a_run_on_shards_equals_the_run_on_the_folder(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=10)
    write_shards(open_data(str(folder)), tmp_path / "shards", shard_size=parse_size("4KB"), log=lambda m: None)
    runs = {}
    for name, data in (("folder", folder), ("shards", f"wds:{tmp_path / 'shards'}")):
        fit(tiny_config(data, tmp_path / f"run-{name}", strategy="full"), log=lambda m: None)
        with open(tmp_path / f"run-{name}" / "metrics.csv", newline="") as f:
            runs[name] = [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]
    assert runs["shards"] == runs["folder"]


def test_several_labels_keep_their_labels_through_the_shards(tmp_path):
    spec = LabelSpec("multi-label")
    source = open_data(str(multilabel_csv(tmp_path, count=24)), spec)
    write_shards(source, tmp_path / "shards", shard_size=10**9, log=lambda m: None)
    again = open_data(f"wds:{tmp_path / 'shards'}", spec)
    assert again.class_names == source.class_names
    assert [i.label for i in again.train] == [i.label for i in source.train]
    with pytest.raises(DataError, match="hold multi-label labels; give task multi-label"):
        open_data(f"wds:{tmp_path / 'shards'}")


def _foreign_shard(path, classes):
    """A shard another tool wrote: KEY.jpg and KEY.cls, no index."""
    from PIL import Image

    with wds.TarWriter(str(path)) as sink:
        for i, cls in enumerate(classes):
            buffer = io.BytesIO()
            Image.new("RGB", (12, 12), (40 * cls, 90, 30)).save(buffer, format="JPEG")
            sink.write({"__key__": f"s{i:04d}", "jpg": buffer.getvalue(), "cls": str(cls).encode()})
        sink.write({"__key__": "garbled", "jpg": b"\xff\xd8 not a JPEG", "cls": b"3"})  # listed, unreadable


def test_foreign_shards_by_pattern_and_a_truncated_one_keeps_what_came_before(tmp_path):
    _foreign_shard(tmp_path / "part-000.tar", [3, 7, 3, 7])
    _foreign_shard(tmp_path / "part-001.tar", [7, 3, 7, 3, 7, 3])
    whole = (tmp_path / "part-001.tar").read_bytes()
    (tmp_path / "part-001.tar").write_bytes(whole[: len(whole) // 2 + 100])  # torn in its third sample
    source = open_data(f"wds:{tmp_path}/part-{{000..001}}.tar")
    assert source.class_names == ["3", "7"]  # the cls values, in order, become classes 0 and 1
    assert [i.label for i in source.train[:4]] == [0, 1, 0, 1] and 5 < len(source.train) < 11
    (torn,) = [reason for name, reason in source.skipped if "part-001.tar" in name]  # its last sample lost its image
    assert "no image member" in torn
    decoded = decode(source.train, PRE)  # the torn shard's first samples decode; the garbled image is listed
    assert len(decoded.labels) == len(source.train) - 1 and decoded.names[:4] == [i.name for i in source.train[:4]]
    assert [name for name, _ in decoded.skipped] == ["part-000.tar/garbled"]
    after = decode(source.train[5:], PRE)  # the rows after the garbled one moved up into its place
    assert torch.equal(decoded.images[4:], after.images) and torch.equal(decoded.labels[4:], after.labels)


def test_a_truncated_shard_of_an_index_is_listed_with_what_it_lost(tmp_path):
    import tarfile

    make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=8)
    write_shards(open_data(str(tmp_path / "data")), tmp_path / "shards", shard_size=2000, log=lambda m: None)
    shards = sorted((tmp_path / "shards" / "train").glob("*.tar"))
    for shard, torn in ((shards[0], False), (shards[1], True)):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
        second = next(m for m in members if m.name.split(".")[0] != members[0].name.split(".")[0])
        # where the second sample begins (the tar just ends early), or inside the first member's bytes
        shard.write_bytes(shard.read_bytes()[: members[0].offset_data + 10 if torn else second.offset])
    source = open_data(str(tmp_path / "shards"))
    why = {Path(name).name: reason for name, reason in source.skipped}
    assert why["000000.tar"] == "shard holds 1 of the 2 images its index lists"
    assert why["000001.tar"].startswith("shard unreadable after 0 samples")
    assert len(source.train) == 13 and len(decode(source.train, PRE).labels) == 13


def test_bad_shard_input_is_one_line(tmp_path, cli):
    code, _, err = cli("train", "resnet18", "--data", f"wds:{tmp_path}/x-{{0..3}}.tar", "--out", tmp_path / "run")
    assert code == 2 and "x-0.tar" in err and "4 of 4 are missing" in err and err.count("\n") == 1
    make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=2)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code, _, err = cli("shard", tmp_path / "data", tmp_path / "taken")
    assert code == 2 and "not empty" in err and (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    code, _, err = cli("shard", tmp_path / "data", tmp_path / "new", "--shard-size", "a lot")
    assert code == 2 and "not a size such as 1GB" in err and not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_an_index_naming_files_outside_its_folder_is_refused(tmp_path):
    make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=2)
    write_shards(open_data(str(tmp_path / "data")), tmp_path / "shards", shard_size=10**9, log=lambda m: None)
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    (tmp_path / "outside.tar").write_bytes((tmp_path / "shards" / "train" / "000000.tar").read_bytes())
    for named, words in [("../outside.tar", "outside its folder or not a .tar"), ("pipe:touch VICTIM; x.tar", "exist")]:
        index["splits"]["train"]["shards"][0]["file"] = named  # webdataset would run a pipe: as a command
        (tmp_path / "shards" / "index.json").write_text(json.dumps(index))
        with pytest.raises(DataError, match=words):
            open_data(str(tmp_path / "shards"))
    assert not (tmp_path / "VICTIM").exists() and not (tmp_path / "shards" / "VICTIM").exists()


def test_sizes_read_as_people_write_them():
    assert parse_size("1GB") == 10**9 and parse_size("500MB") == 5 * 10**8 and parse_size("2GiB") == 2 * 2**30
    assert parse_size("4096") == 4096 and parse_size("1.5kb") == 1500
    with pytest.raises(DataError):
        parse_size("0MB")


class _Runs:
    """Unpickling it calls ``fn(*args)``: the stand-in for any code a pickle can run."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def test_members_that_would_run_code_stay_bytes(tmp_path):
    import os
    import pickle

    victim = tmp_path / "VICTIM"
    _foreign_shard(tmp_path / "shard.tar", [0, 1])
    with wds.TarWriter(str(tmp_path / "more.tar")) as sink:  # webdataset's decoders would unpickle .pyd members
        payload = pickle.dumps(_Runs(os.system, (f"touch {victim}",)))
        sink.write({"__key__": "evil", "jpg": (tmp_path / "shard.tar").read_bytes()[:0], "cls": b"1", "pyd": payload})
    source = open_data(f"wds:{tmp_path}/{{shard,more}}.tar")
    decode(source.train, PRE)
    assert not victim.exists()


def test_streamed_training_runs_every_epoch_from_the_shards_and_repeats_itself(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=12)
    write_shards(open_data(str(folder)), tmp_path / "shards", shard_size=parse_size("3KB"), log=lambda m: None)
    runs = {}
    for name in ("first", "again"):
        logged = []
        config = tiny_config(f"wds:{tmp_path / 'shards'}", tmp_path / name, strategy="lp-ft", stream=True, epochs=3)
        result = fit(config, log=logged.append)
        with open(tmp_path / name / "metrics.csv", newline="") as f:
            runs[name] = [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]
    assert runs["first"] == runs["again"]  # the same shards drawn, in the same order: the seed decides
    text = "\n".join(logged)
    assert "train images streamed from" in text and "no cache of the frozen layers" in text
    assert len(runs["first"]) == 3 and result["best_val_acc"] > 0.5


def test_stream_needs_shards_and_what_it_cannot_keep_is_refused(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    with pytest.raises(DataError, match="stream reads WebDataset shards"):
        fit(tiny_config(folder, tmp_path / "run", stream=True), log=lambda m: None)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="strategy needs the decoded training images"):
        tiny_config(folder, tmp_path / "run", stream=True, strategy="auto")
    with pytest.raises(ConfigError, match="balance needs the decoded"):
        tiny_config(folder, tmp_path / "run", stream=True, balance="sampler")
