"""Exports with their parity proof and sidecar, run by onnxruntime in predict and eval."""

import json
import shutil

import numpy as np
import pytest
import torch

from tests.helpers import make_image_folder, tiny_config
from transferkit.deploy import export as export_module
from transferkit.deploy import parity as parity_module
from transferkit.deploy.export import export_run
from transferkit.errors import ConfigError, ParityError, RunError
from transferkit.inference.onnx_model import onnx_session
from transferkit.inference.predict import load_predictor
from transferkit.inference.runs import evaluate_run, load_trained
from transferkit.inference.sidecar import read_sidecar, sidecar_path
from transferkit.train.engine import fit

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    make_image_folder(root / "data", per_class=30, size=20)
    config = tiny_config(root / "data", root / "run", epochs=3, lr=0.05)
    fit(config, log=lambda m: None)
    return root


def fresh(run, tmp_path):
    """A copy of the run, so that each test writes its own exports."""
    shutil.copytree(run / "run", tmp_path / "run")
    return tmp_path / "run"


def test_onnx_export_matches_and_runs_in_predict_and_eval(run, tmp_path):
    folder = fresh(run, tmp_path)
    result = export_run(folder, trust_code=True, log=lambda m: None)
    assert result.path == folder / "model.onnx" and result.sidecar == folder / "model.onnx.json"
    parity = result.parity
    assert parity["images"] == 12 and parity["top1_agreement"] == 1.0
    assert parity["max_abs_diff"] < 1e-4 * max(1.0, parity["scale"])
    facts = read_sidecar(result.path)
    assert facts["class_names"] == ["cat", "dog"] and facts["input"]["layout"] == "NCHW"
    assert facts["preprocessing"]["input_size"] == [3, 16, 16] and facts["parity"] == parity

    images = sorted((run / "data").glob("*/*.png"))[:6]
    from_run = load_predictor(str(folder), device="cpu", trust_code=True).predict(images, top_k=2)
    from_onnx = load_predictor(str(result.path), device="cpu").predict(images, top_k=2)
    for a, b in zip(from_run, from_onnx):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-5)
    other = make_image_folder(tmp_path / "other", per_class=7, size=24, seed=1)  # all of it, for both
    by_run = evaluate_run(folder, str(other), trust_code=True)
    by_onnx = evaluate_run(str(result.path), str(other))
    assert by_run["split"] == by_onnx["split"] == "all images" and by_onnx["images"] == 14
    assert by_onnx["confusion_matrix"] == by_run["confusion_matrix"]
    assert by_onnx["loss"] == pytest.approx(by_run["loss"], abs=1e-5)


def test_preprocessing_in_the_graph_takes_uint8_nhwc(run, tmp_path):
    folder = fresh(run, tmp_path)
    result = export_run(folder, with_preprocessing=True, trust_code=True, log=lambda m: None)
    facts = read_sidecar(result.path)
    assert facts["input"] == {
        "name": "images",
        "layout": "NHWC",
        "dtype": "uint8",
        "normalised": False,
        "shape": [None, 16, 16, 3],
    }
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)  # (N, C, H, W) as decoded
    session = onnx_session(result.path)
    got = session.run(None, {"images": images.permute(0, 2, 3, 1).numpy()})[0]
    trained = load_trained(folder, device="cpu", trust_code=True)
    mean = torch.tensor(trained.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(trained.preprocessing.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = trained.model((images.float() / 255 - mean) / std).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("format, suffix", [("exported-program", ".pt2"), ("safetensors", ".safetensors")])
def test_other_formats_are_proven_too(run, tmp_path, format, suffix):
    folder = fresh(run, tmp_path)
    result = export_run(folder, format=format, trust_code=True, log=lambda m: None)
    assert result.path.name == f"model{suffix}" and result.parity["top1_agreement"] == 1.0
    assert result.parity["max_abs_diff"] <= 1e-5 and read_sidecar(result.path)["format"] == format


def test_an_export_that_computes_otherwise_is_refused_and_nothing_is_written(run, tmp_path, monkeypatch):
    folder = fresh(run, tmp_path)
    original = export_module._export

    def in_training_mode(format, net, example, path, uint8, trained, card=None):
        net.train()  # BatchNorm on batch statistics: the classic broken export
        original(format, net, example, path, uint8, trained, card)

    monkeypatch.setattr(export_module, "_export", in_training_mode)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ParityError, match="computes something else.*nothing was written"):
        export_run(folder, format="exported-program", trust_code=True, log=lambda m: None)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_sidecar_missing_edited_or_for_another_file_is_refused(run, tmp_path):
    folder = fresh(run, tmp_path)
    path = export_run(folder, trust_code=True, log=lambda m: None).path
    side = sidecar_path(path)
    facts = json.loads(side.read_text())
    facts["class_names"] = ["dog", "cat"]
    side.write_text(json.dumps(facts))
    with pytest.raises(RunError, match="changed after export"):
        load_predictor(str(path), device="cpu")
    side.unlink()
    with pytest.raises(RunError, match="has no sidecar"):
        load_predictor(str(path), device="cpu")
    other = export_run(folder, out=tmp_path / "other.onnx", with_preprocessing=True, trust_code=True, log=print)
    shutil.copy(sidecar_path(other.path), side)  # the other export's sidecar beside this file
    with pytest.raises(RunError, match="not the file its sidecar was written for"):
        evaluate_run(str(path), str(run / "data"))


def test_bad_requests_are_refused_before_any_work(run, tmp_path):
    folder = fresh(run, tmp_path)
    with pytest.raises(ConfigError, match="Unknown export format 'tflite'"):
        export_run(folder, format="tflite")
    with pytest.raises(ConfigError, match="for the onnx format"):
        export_run(folder, format="safetensors", quantize="dynamic")
    with pytest.raises(RunError, match="holds no best.pt"):
        export_run(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(RunError, match="'.*a_file' is a file, not a folder"):
        export_run(folder, out=tmp_path / "a_file" / "deeper" / "m.onnx")


def test_an_export_makes_the_folders_its_out_names(run, tmp_path):
    folder = fresh(run, tmp_path)
    out = tmp_path / "missing" / "deeper" / "m.onnx"
    assert export_run(folder, out=out, trust_code=True, log=lambda m: None).path == out and out.is_file()


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_exports_report_the_accuracy_they_cost(run, tmp_path, mode):
    folder = fresh(run, tmp_path)
    result = export_run(folder, quantize=mode, trust_code=True, log=lambda m: None)
    parity = result.parity
    assert result.path.name == "model.int8.onnx" and parity["precision"] == f"int8 ({mode})"
    assert parity["accuracy_drop"] <= 1.0 and parity["fp32"]["max_abs_diff"] < 1e-3
    assert read_sidecar(result.path)["quantization"] == mode
    assert load_predictor(str(result.path), device="cpu").predict([next((run / "data").glob("*/*.png"))])[0]["top"]


def test_int8_past_the_accuracy_limit_is_refused(run, tmp_path, monkeypatch):
    folder = fresh(run, tmp_path)
    monkeypatch.setattr(parity_module, "INT8_MAX_DROP", -1.0)  # no drop at all would be accepted
    with pytest.raises(ParityError, match=r"costs -?0\.00 accuracy points.*nothing was written"):
        export_run(folder, quantize="dynamic", trust_code=True, log=lambda m: None)
    assert not (folder / "model.int8.onnx").exists() and not list(folder.glob(".export-*"))


@pytest.mark.slow
def test_the_real_lite0_exports_to_onnx_with_its_parity(tmp_path):
    make_image_folder(tmp_path / "data", per_class=15, size=80)
    config = tiny_config(
        tmp_path / "data",
        tmp_path / "run",
        model="tf_efficientnet_lite0",
        weights="lite0",
        strategy="freeze",
        epochs=1,
        image_size=96,
    )
    fit(config, log=lambda m: None)
    result = export_run(tmp_path / "run", log=lambda m: None)
    parity = result.parity
    assert parity["images"] == 6 and parity["top1_agreement"] == 1.0
    assert parity["max_abs_diff"] < 1e-4 * max(1.0, parity["scale"])  # 3e-6 of the scale measured at 224 px
    images = sorted((tmp_path / "data").glob("*/*.png"))[:4]
    onnx = load_predictor(str(result.path), device="cpu").predict(images, top_k=1)
    torch_ = load_predictor(str(tmp_path / "run"), device="cpu").predict(images, top_k=1)
    assert [r["top"][0]["label"] for r in onnx] == [r["top"][0]["label"] for r in torch_]


def test_the_command_exits_1_on_a_failed_proof_with_one_line(run, tmp_path, monkeypatch, capsys):
    from tests.hostile.conftest import run_cli

    folder = fresh(run, tmp_path)
    monkeypatch.setattr(parity_module, "INT8_MAX_DROP", -1.0)
    capsys.readouterr()
    assert run_cli("export", folder, "--quantize", "static", "--trust-code", "--json") == 1
    out, err = capsys.readouterr()
    assert err.count("transferkit: error:") == 1 and "accuracy points" in err and "Traceback" not in err
    assert json.loads(out.strip().splitlines()[-1])["exit_code"] == 1
    assert not (folder / "model.int8.onnx").exists()


def test_the_proof_samples_every_class_and_states_the_runs_own_score(run, tmp_path, monkeypatch, cli):
    """The held-out images are listed class by class: a sample of the first ones would be one class."""
    folder = fresh(run, tmp_path)
    monkeypatch.setattr(parity_module, "PARITY_IMAGES", 6)
    labels = []
    original = parity_module.compare_outputs

    def compare(reference, got, held_labels, trained):
        labels.extend(held_labels.tolist())
        return original(reference, got, held_labels, trained)

    monkeypatch.setattr(parity_module, "compare_outputs", compare)
    result = export_run(folder, trust_code=True, log=lambda m: None)
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    assert result.parity["split"].endswith("(a sample of 6, stratified by class, seed 0)")
    best = json.loads((folder / "report.json").read_text())["best"]
    assert result.parity["run_validation"]["val_acc"] == best["val_acc"]
    code, out, err = cli("export", folder, "--trust-code", "--out", tmp_path / "again.onnx")
    assert code == 0, err
    text = " ".join(out.split())
    assert f"the run's own validation (best.pt, epoch {best['epoch']}, every held-out image): val_acc" in text
