"""Batch prediction into a file: folders, CSVs, unreadable files, the three formats, and resuming."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from transferkit.data.sources import open_data
from transferkit.errors import DataError, RunError
from transferkit.inference.batch import predict_to_file
from transferkit.inference.predict import load_predictor


@pytest.fixture
def images(tmp_path, run):
    """Nested folders of the run's images, a text file and a truncated PNG among them."""
    _, data = run
    root = tmp_path / "photos"
    for i, path in enumerate(sorted(data.glob("*/*.png"))):
        target = root / f"shoot{i % 3}" / ("deep" if i % 2 else "") / f"{path.parent.name}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (root / "notes.txt").write_text("not an image")
    (root / "shoot0" / "broken.png").write_bytes(sorted(data.glob("cat/*.png"))[0].read_bytes()[:60])
    return root


def test_a_folder_is_predicted_recursively_and_each_row_equals_predict(tmp_path, run, images):
    predictor = load_predictor(str(run[0]), device="cpu", trust_code=True)
    written = predict_to_file(predictor, images, tmp_path / "p.csv", top_k=2, workers=2, part=8, log=lambda m: None)
    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    files = sorted(p for p in images.rglob("*") if p.is_file())
    assert sorted(table["image"]) == sorted(str(p.relative_to(images)) for p in files)
    assert written.images == len(files) == 22 and written.unreadable == 2
    assert set(table.loc[table["error"] != "", "image"]) == {"notes.txt", "shoot0/broken.png"}
    one = {r["image"]: r for r in predictor.predict([p for p in files if p.suffix == ".png"], top_k=2)}
    for row in table[table["error"] == ""].itertuples():
        alone = one[str(images / row.image)]
        assert row.class_1 == alone["top"][0]["label"] and row.class_2 == alone["top"][1]["label"]
        assert float(row.probability_1) == pytest.approx(alone["top"][0]["probability"], abs=1e-6)
    assert not (tmp_path / "p.csv.parts").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_each_format_reads_back_as_the_csv_does(tmp_path, run, images, suffix):
    predictor = load_predictor(str(run[0]), device="cpu", trust_code=True)
    predict_to_file(predictor, images, tmp_path / "p.csv", workers=0, log=lambda m: None)
    predict_to_file(predictor, images, tmp_path / f"p{suffix}", workers=0, log=lambda m: None)
    base = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    other = (
        pd.read_json(tmp_path / "p.jsonl", lines=True)
        if suffix == ".jsonl"
        else pd.read_parquet(tmp_path / "p.parquet")
    )
    assert list(other.columns) == list(base.columns) and list(other["image"]) == list(base["image"])
    assert (
        other["probability_1"].fillna(-1).round(6).tolist()
        == base["probability_1"].replace("", -1).astype(float).round(6).tolist()
    )


def test_an_interrupted_prediction_resumes_to_the_same_file(tmp_path, run, images, monkeypatch):
    predictor = load_predictor(str(run[0]), device="cpu", trust_code=True)
    whole = tmp_path / "whole.jsonl"
    predict_to_file(predictor, images, whole, part=4, workers=0, log=lambda m: None)
    calls, real = [], predictor.predict_tensors

    def dies_in_the_third_part(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict_tensors", dies_in_the_third_part)
    out = tmp_path / "p.jsonl"
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(predictor, images, out, part=4, workers=0, log=lambda m: None)
    assert not out.exists() and sorted(p.name for p in (tmp_path / "p.jsonl.parts").iterdir()) == [
        "manifest.json",
        "part-000000.jsonl",
        "part-000001.jsonl",
    ]
    with pytest.raises(RunError, match="holds an interrupted prediction into this file: --resume"):
        predict_to_file(predictor, images, out, part=4, workers=0, log=lambda m: None)
    monkeypatch.setattr(predictor, "predict_tensors", real)
    again = predict_to_file(predictor, images, out, part=4, workers=0, resume=True, log=lambda m: None)
    assert again.resumed == 8 and out.read_bytes() == whole.read_bytes()
    with pytest.raises(RunError, match="other images or parts"):
        (tmp_path / "p.jsonl.parts").mkdir()
        (tmp_path / "p.jsonl.parts" / "manifest.json").write_text(json.dumps({"images": 1}))
        predict_to_file(predictor, images, out, part=4, workers=0, resume=True, log=lambda m: None)


def test_a_csv_with_labels_gets_the_accuracy(tmp_path, run):
    folder, shared = run
    data = shutil.copytree(shared, tmp_path / "data")  # the CSV beside its images, paths relative to it
    rows = ["path,label"] + [f"{p.relative_to(data)},{p.parent.name}" for p in sorted(data.glob("*/*.png"))]
    (data / "list.csv").write_text("\n".join(rows) + "\n")
    predictor = load_predictor(str(folder), device="cpu", trust_code=True)
    written = predict_to_file(predictor, data / "list.csv", tmp_path / "p.csv", workers=0, log=lambda m: None)
    table = pd.read_csv(tmp_path / "p.csv")
    assert written.accuracy == pytest.approx((table["class_1"] == table["label"]).mean())
    assert "accuracy" in repr(written) and written.images == 20


def test_what_cannot_be_predicted_is_one_clear_error(tmp_path, run):
    predictor = load_predictor(str(run[0]), device="cpu", trust_code=True)
    with pytest.raises(DataError, match=r"must end in \.csv, \.jsonl, \.parquet"):
        predict_to_file(predictor, run[1], tmp_path / "p.txt", log=lambda m: None)
    (tmp_path / "a.csv").write_text("name\nx.png\n")  # the path columns train reads: path, file, filename, image
    with pytest.raises(DataError, match="needs a header with a path column"):
        predict_to_file(predictor, tmp_path / "a.csv", tmp_path / "p.csv", log=lambda m: None)
    (tmp_path / "b.csv").write_text('path,label\n"x.png",cat\ny.png,cat,tabby\n')  # read as train reads a CSV
    with pytest.raises(DataError, match="line 3 has 3 fields where the header has 2"):
        predict_to_file(predictor, tmp_path / "b.csv", tmp_path / "p.csv", log=lambda m: None)
    with pytest.raises(DataError, match="is not a folder or a .csv of paths"):
        predict_to_file(predictor, tmp_path / "missing", tmp_path / "p.csv", log=lambda m: None)


def test_the_command_writes_a_folder_s_predictions(tmp_path, run, images, cli):
    out = tmp_path / "p.parquet"
    code, _, err = cli("predict", run[0], images, "--out", out, "--device", "cpu", "--trust-code")
    assert code == 0, err
    assert len(pd.read_parquet(out)) == 22 and "22 images predicted into" in err and "2 unreadable" in err
    code, _, err = cli("predict", run[0], "builtin:digits", "--out", tmp_path / "d.csv", "--trust-code", "--json")
    assert code == 0 and "1797 images predicted" in err and len(pd.read_csv(tmp_path / "d.csv")) == 1797
    code, _, err = cli("predict", run[0], images, "--trust-code")
    assert code != 0 and "predict it alone, with --out FILE" in " ".join(err.split())


def test_an_onnx_export_predicts_the_same_rows(tmp_path, run, images):
    from transferkit.deploy.export import export_run

    export_run(run[0], format="onnx", trust_code=True, log=lambda m: None)
    ours = predict_to_file(
        load_predictor(str(run[0]), device="cpu", trust_code=True),
        images,
        tmp_path / "a.csv",
        workers=0,
        log=lambda m: None,
    )
    onnx = predict_to_file(
        load_predictor(str(run[0] / "model.onnx")), images, tmp_path / "b.csv", workers=0, log=lambda m: None
    )
    a, b = (pd.read_csv(p, keep_default_na=False) for p in (ours.out, onnx.out))
    assert a["image"].tolist() == b["image"].tolist() and a["class_1"].tolist() == b["class_1"].tolist()
    readable = a["error"] == ""
    assert (
        a.loc[readable, "probability_1"].astype(float) - b.loc[readable, "probability_1"].astype(float)
    ).abs().max() < 1e-4


def test_a_prediction_killed_by_a_signal_resumes_to_the_same_file(tmp_path, run, images):
    """SIGKILL mid-way (no handler runs): the complete parts stay, --resume finishes the file as if uninterrupted."""
    predictor = load_predictor(str(run[0]), device="cpu", trust_code=True)
    whole = tmp_path / "whole.csv"
    predict_to_file(predictor, images, whole, part=4, workers=0, log=lambda m: None)
    out, parts = tmp_path / "p.csv", tmp_path / "p.csv.parts"
    script = (
        "import sys, time\n"
        "from transferkit.inference.batch import predict_to_file\n"
        "from transferkit.inference.predict import load_predictor\n"
        "p = load_predictor(sys.argv[1], device='cpu', trust_code=True)\n"
        "real = p.predict_tensors\n"
        "p.predict_tensors = lambda *a, **k: (time.sleep(0.4), real(*a, **k))[1]\n"
        "predict_to_file(p, sys.argv[2], sys.argv[3], part=4, workers=0, log=lambda m: None)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    child = subprocess.Popen([sys.executable, "-c", script, str(run[0]), str(images), str(out)], env=env)
    deadline = time.monotonic() + 60
    while not (parts / "part-000001.jsonl").exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL and not out.exists()
    again = predict_to_file(predictor, images, out, part=4, workers=0, resume=True, log=lambda m: None)
    assert again.resumed >= 8 and out.read_bytes() == whole.read_bytes()


def test_a_dataset_by_name_is_predicted_with_its_classes_as_labels(tmp_path, run):
    predictor = load_predictor(str(run[0]), device="cpu", trust_code=True)
    written = predict_to_file(predictor, "builtin:digits", tmp_path / "p.jsonl", workers=0, log=lambda m: None)
    table = pd.read_json(tmp_path / "p.jsonl", lines=True, dtype=False)
    assert written.images == len(table) == 1797 and written.unreadable == 0
    assert sorted(set(table["label"])) == [str(d) for d in range(10)] and table["image"].is_unique
    assert written.accuracy == 0.0  # the run's classes are cat and dog: the top class is never a digit


def test_shards_are_predicted_a_part_at_a_time_as_their_files_are(tmp_path, run):
    from transferkit.data.shards import write_shards

    folder = run[1]
    write_shards(open_data(str(folder)), tmp_path / "shards", shard_size=3000, log=lambda m: None)  # 5 shards
    predictor = load_predictor(str(run[0]), device="cpu", trust_code=True)
    sharded = predict_to_file(predictor, f"wds:{tmp_path / 'shards'}", tmp_path / "s.csv", part=4, log=lambda m: None)
    files = predict_to_file(predictor, folder, tmp_path / "f.csv", part=4, workers=0, log=lambda m: None)
    a, b = (pd.read_csv(p, keep_default_na=False) for p in (sharded.out, files.out))
    a["image"] = [str(Path(p).relative_to(folder)) for p in a["image"]]
    a = a.sort_values("image").reset_index(drop=True)
    assert sharded.images == files.images == 20 and list(a["label"]) == list(a["image"].str.split("/").str[0])
    assert sharded.accuracy == (b["class_1"] == b["image"].str.split("/").str[0]).mean()  # the shards' classes
    pd.testing.assert_frame_equal(a.drop(columns="label"), b, check_exact=False, atol=1e-6)
