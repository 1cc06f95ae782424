"""Several labels per image, and numbers per image, read from a CSV: values, errors, splits, decoding."""

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.data.decode import decode
from transferkit.data.preprocess import Preprocessing
from transferkit.data.sources import open_data, split_items, stratified_sample
from transferkit.errors import DataError
from transferkit.tasks import LabelSpec
from transferkit.tasks.split import target_bins

MULTI = LabelSpec(task="multi-label")
REGRESSION = LabelSpec(task="regression")
PRE = Preprocessing(input_size=(3, 8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _csv(tmp_path, header: str, rows: list[str], images: int = 0) -> str:
    """A CSV of ``rows`` beside ``images`` small PNGs named 0.png, 1.png, ..."""
    for i in range(images):
        Image.fromarray(np.full((6, 6), i * 7 % 256, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    path = tmp_path / "data.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def test_labels_joined_by_a_separator_become_one_flag_per_label(tmp_path):
    spec = _csv(tmp_path, "path,labels", ["0.png,cat;dog", "1.png,dog", "2.png,", "3.png, cat ; bird "], images=4)
    source = open_data(spec, MULTI)
    assert source.task == "multi-label" and source.class_names == ["bird", "cat", "dog"]
    assert [item.label for item in source.train] == [(0, 1, 1), (0, 0, 1), (0, 0, 0), (1, 1, 0)]  # none applies
    decoded = decode(source.train, PRE)
    assert decoded.labels.dtype == torch.float32 and decoded.labels.shape == (4, 3)
    piped = open_data(_csv(tmp_path, "path,tags", ["0.png,a|b", "1.png,b"]), LabelSpec(task="multi-label", sep="|"))
    assert piped.class_names == ["a", "b"] and piped.train[0].label == (1, 1)


def test_one_column_per_label(tmp_path):
    spec = _csv(tmp_path, "path,Car,Tree,other", ["0.png,1,0,x", "1.png,0,1,y", "2.png,1,1,z"], images=3)
    source = open_data(spec, LabelSpec(task="multi-label", columns=("Car", "Tree")))
    assert source.class_names == ["Car", "Tree"] and [i.label for i in source.train] == [(1, 0), (0, 1), (1, 1)]


def test_numbers_from_a_target_column_or_a_named_one(tmp_path):
    spec = _csv(tmp_path, "path,target,age", ["0.png,1.5,30", "1.png,-2,41", "2.png,3e2,52"], images=3)
    source = open_data(spec, REGRESSION)
    assert source.task == "regression" and source.class_names == ["target"]
    assert [item.label for item in source.train] == [1.5, -2.0, 300.0]
    aged = open_data(spec, LabelSpec(task="regression", target_column="Age"))
    assert aged.class_names == ["age"] and aged.train[2].label == 52.0
    decoded = decode(aged.train, PRE)
    assert decoded.labels.dtype == torch.float32 and decoded.labels.tolist() == [30.0, 41.0, 52.0]


@pytest.mark.parametrize(
    "spec, header, rows, message",
    [
        (REGRESSION, "path,target", ["0.png,1", "1.png,abc"], "line 3 has target 'abc', which is not a number"),
        (REGRESSION, "path,target", ["0.png,nan", "1.png,1"], "line 2 has target 'nan'; targets must be finite"),
        (REGRESSION, "path,target", ["0.png,inf"], "targets must be finite numbers"),
        (REGRESSION, "path,target", ["0.png,2", "1.png,2"], "one target value for every training image"),
        (REGRESSION, "path,label", ["0.png,2"], "needs a header with 'path' and 'target' columns"),
        (LabelSpec(task="regression", target_column="age"), "path,target", ["0.png,2"], "no target column 'age'"),
        (MULTI, "path,labels", ["0.png,a;;b"], "line 2 has an empty label name in 'a;;b'"),
        (MULTI, "path,labels,split", ["0.png,a,train", "1.png,b,val"], "line 3: label 'b' (val) has no training"),
        (LabelSpec(task="multi-label", columns=("a", "b")), "path,a,b", ["0.png,1,2"], "'2' in label column 'b'"),
        (LabelSpec(task="multi-label", columns=("a", "c")), "path,a,b", ["0.png,1,0"], "no label column 'c'"),
        (LabelSpec(task="classification"), "path,label", ["0.png,"], "line 2 has an empty label"),
    ],
)
def test_bad_values_name_their_line(tmp_path, spec, header, rows, message):
    path = _csv(tmp_path, header, rows, images=2)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_data(path, spec)


def test_other_tasks_need_a_csv():
    with pytest.raises(DataError, match="task regression comes from a CSV"):
        open_data("builtin:digits", REGRESSION)


def test_multi_label_splits_keep_every_labels_share(tmp_path):
    rng = np.random.default_rng(0)
    flags = (rng.random((400, 4)) < [0.5, 0.2, 0.1, 0.05]).astype(int)
    rows = [f"{i % 3}.png,{';'.join(n for n, f in zip('abcd', row) if f)}" for i, row in enumerate(flags)]
    source = open_data(_csv(tmp_path, "path,labels", rows, images=3), MULTI)
    train, val = split_items(source.train, val_fraction=0.25, seed=0)
    assert len(val) == 100 and len(train) == 300
    for k in range(4):  # each label's share differs by at most one image's worth between the parts
        share = [sum(item.label[k] for item in part) / len(part) for part in (train, val)]
        assert abs(share[0] - share[1]) <= 0.011, (k, share)
    again, _ = split_items(source.train, val_fraction=0.25, seed=0)
    assert [i.name for i in again] == [i.name for i in train]  # the seed decides
    sample = stratified_sample(source.train, 100, seed=0)
    assert len(sample) == 100 and sum(item.label[3] for item in sample) in (4, 5, 6)  # 5% of 100


def test_regression_splits_span_the_targets_range(tmp_path):
    values = list(np.random.default_rng(1).exponential(10.0, size=300))
    rows = [f"{i % 3}.png,{v}" for i, v in enumerate(values)]
    source = open_data(_csv(tmp_path, "path,target", rows, images=3), REGRESSION)
    train, val = split_items(source.train, val_fraction=0.2, seed=0)
    assert len(val) == 60
    for q in (0.1, 0.5, 0.9):  # the parts' quantiles agree where an unstratified draw can miss the tail
        parts = [np.quantile([item.label for item in part], q) for part in (train, val)]
        assert abs(parts[0] - parts[1]) <= 0.15 * np.quantile(values, 0.9), (q, parts)
    assert target_bins([1.0, 2.0, 3.0]) == [0, 0, 0]  # too few for two bins of two
    assert sorted(set(target_bins(values))) == list(range(10))
