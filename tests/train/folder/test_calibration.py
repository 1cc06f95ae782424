"""Temperature scaling: the fit, where the run keeps it, and what predict and eval do with it."""

import json
import shutil

import pytest
import torch

from tests.helpers import make_image_folder, tiny_config
from transferkit.errors import RunError
from transferkit.inference.predict import load_predictor
from transferkit.inference.runs import evaluate_run
from transferkit.train.engine import fit
from transferkit.train.folder.calibration import calibrate, fit_temperature, held_out_halves, read_temperature


def test_the_fit_recovers_the_temperature_that_made_the_labels():
    torch.manual_seed(0)
    logits = torch.randn(20000, 5) * 3
    labels = torch.distributions.Categorical(logits=logits / 2.5).sample()  # calibrated at T = 2.5
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(logits / 2.5, labels) == pytest.approx(1.0, rel=0.05)


def test_a_temperature_is_kept_only_where_it_calibrates_images_it_was_not_fitted_on(tmp_path):
    torch.manual_seed(0)
    logits = torch.randn(400, 3) * 3
    labels = torch.distributions.Categorical(logits=logits / 2.5).sample()  # over-confident: T = 2.5 helps
    lines = []
    kept = calibrate(tmp_path, logits, labels, 1, "val", log=lines.append)
    assert kept["temperature"] == pytest.approx(2.5, rel=0.1) and kept["ece_after"] < kept["ece_before"]
    assert lines[0].startswith("calibration: temperature 2.5") and "each half calibrated by the other's fit" in lines[0]
    torch.manual_seed(0)
    logits = torch.randn(60, 3) * 2
    labels = torch.distributions.Categorical(logits=logits).sample()  # calibrated already: a fit only adds noise
    lines = []
    refused = calibrate(tmp_path, logits, labels, 1, "val", log=lines.append)
    assert refused["temperature"] is None and refused["fitted"] != 1.0
    assert refused["ece_cross_fitted"] > refused["ece_before"] == refused["ece_after"]
    assert "it would not lower the expected calibration error of images it was not fitted on" in refused["reason"]
    assert lines[0].startswith("calibration: no temperature kept: it would not lower")
    assert read_temperature(tmp_path) is None  # predict and the report: the softmax of the logits


def test_the_halves_split_every_class_evenly_and_cover_each_image_once():
    strata = torch.tensor([0] * 7 + [1] * 4 + [2] * 1)
    a, b = held_out_halves(strata)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(12))
    assert all(abs(int((strata[a] == k).sum()) - int((strata[b] == k).sum())) <= 1 for k in range(3))
    assert torch.equal(held_out_halves(strata)[0], a)  # seeded


def overlapping_folder(root, per_class=60, size=20):
    """Two classes whose brightness distributions overlap: some held-out images are misclassified."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            level = rng.normal(110 + 30 * index, 25)
            pixels = np.clip(rng.normal(level, 10, (size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    overlapping_folder(root / "data")
    config = tiny_config(root / "data", root / "run", epochs=4, lr=0.05)
    summary = fit(config, log=lambda m: None)
    return root, summary


def test_training_fits_a_temperature_on_the_held_out_images(run):
    root, summary = run
    facts = json.loads((root / "run" / "calibration.json").read_text())
    assert summary["calibration"] == facts and facts["images"] == 24 and facts["epoch"] == summary["best"]["epoch"]
    assert facts["temperature"] is not None and facts["reason"] is None
    assert facts["nll_after"] < facts["nll_before"]  # the fit minimises it; T = 1 is one of its candidates
    assert read_temperature(root / "run", facts["epoch"]) == facts["temperature"]
    assert read_temperature(root / "run", facts["epoch"] + 1) is None  # fitted for another best checkpoint


def test_training_calibrates_on_its_own_validation_logits_and_they_equal_a_fresh_computation(run, tmp_path):
    from transferkit.inference.runs import calibrate_run

    root, summary = run
    kept = json.loads((root / "run" / "calibration.json").read_text())
    assert kept["split"].startswith("validation (")  # from training's validation, not decoded again
    shutil.copytree(root / "run", tmp_path / "run")
    fresh = calibrate_run(tmp_path / "run", trust_code=True, log=lambda m: None)  # reads and runs the images
    assert fresh["images"] == kept["images"] and fresh["epoch"] == kept["epoch"]
    assert fresh["temperature"] == pytest.approx(kept["temperature"], rel=1e-5)
    assert fresh["nll_before"] == pytest.approx(kept["nll_before"], rel=1e-5)


def test_separated_held_out_images_give_no_temperature(tmp_path):
    make_image_folder(tmp_path / "data", per_class=60, size=20)  # dark against bright: no overlap
    config = tiny_config(tmp_path / "data", tmp_path / "run", epochs=1)
    facts = fit(config, log=lambda m: None)["calibration"]
    assert facts["temperature"] is None and "ran to the bound" in facts["reason"]
    assert read_temperature(tmp_path / "run") is None


def test_predict_and_eval_use_the_temperature(run, tmp_path):
    root, _ = run
    folder = tmp_path / "run"
    shutil.copytree(root / "run", folder)
    facts = json.loads((folder / "calibration.json").read_text())
    facts.update(temperature=2.0, reason=None)
    (folder / "calibration.json").write_text(json.dumps(facts))
    image = [next((root / "data").glob("cat/*.png"))]
    calibrated = load_predictor(str(folder), device="cpu", trust_code=True).predict(image, top_k=2)[0]["top"]
    raw = load_predictor(str(folder), device="cpu", trust_code=True, uncalibrated=True).predict(image, top_k=2)[0]
    p = torch.tensor([t["probability"] for t in raw["top"]])
    expected = (p.log() / 2.0).softmax(-1)  # softmax(z / T) from softmax(z)
    assert [t["probability"] for t in calibrated] == pytest.approx(expected.tolist(), abs=1e-5)
    result = evaluate_run(folder, trust_code=True)
    assert result["temperature"] == 2.0 and result["calibrated"]["ece"] != result["calibration"]["ece"]


def test_a_damaged_calibration_file_is_an_error(run, tmp_path):
    root, _ = run
    folder = tmp_path / "run"
    shutil.copytree(root / "run", folder)
    (folder / "calibration.json").write_text('{"temperature": "hot"}')
    with pytest.raises(RunError, match="calibration.json' is damaged"):
        load_predictor(str(folder), device="cpu", trust_code=True)
    (folder / "calibration.json").write_text('{"temperature": 1e9}')
    with pytest.raises(RunError, match="outside"):
        evaluate_run(folder, trust_code=True)


def test_eval_of_the_held_out_split_reproduces_training_s_validation(run):
    root, summary = run
    result = evaluate_run(root / "run", trust_code=True)
    best = summary["best"]
    assert result["validation"]["same"] and result["validation"]["epoch"] == best["epoch"]
    assert result["accuracy"] == best["val_acc"] and result["loss"] == pytest.approx(best["val_loss"], abs=1e-6)


def test_a_differing_evaluation_says_why():
    from transferkit.inference.runs import TrainedModel, _against_validation
    from transferkit.runtime.fastpath import FastPath

    trained = TrainedModel(None, None, ["a", "b"], None, FastPath(True, "bf16", "measured"))
    trained.validated = {"row": {"epoch": 3, "val_acc": 0.9, "val_loss": 0.3}, "kernels": {"precision": "fp32"}}
    why = _against_validation(trained, {"accuracy": 0.85})
    assert not why["same"] and "training kernels (NCHW fp32)" in why["why"] and "channels-last bf16" in why["why"]
    trained.validated["row"]["cached"] = True
    assert "activations computed once" in _against_validation(trained, {"accuracy": 0.85})["why"]
    assert _against_validation(trained, {"accuracy": 0.9})["same"]


def test_the_report_page_and_predict_show_the_same_probabilities_and_say_which(run, tmp_path, cli):
    import re

    root, _ = run
    folder = tmp_path / "run"
    shutil.copytree(root / "run", folder)
    temperature = json.loads((folder / "calibration.json").read_text())["temperature"]
    result = evaluate_run(folder, trust_code=True, report=True)
    page = (folder / "report.html").read_text()
    said = f"calibrated: the softmax of the logits divided by the run&#x27;s temperature {temperature:.3f}"
    assert f"Probabilities on this page are {said}:" in " ".join(page.split())
    assert result["probabilities"].startswith("calibrated: ")
    card = r'<div title="([^"]+\.png)">.*?</div><div>true <b>(\w+)</b>.*?<div>p\(true\) ([0-9.]+)%</div>'
    cards = re.findall(card, page)
    assert cards
    for name, true, shown in cards[:3]:
        image = root / "data" / name.rsplit("/data/", 1)[-1]  # the card's title is the whole path
        code, out, err = cli("predict", folder, image, "--top-k", "2", "--trust-code", "--device", "cpu")
        assert code == 0, err
        assert "probabilities: calibrated: the softmax of the logits divided by the run's temperature" in err + out
        by_class = {label: float(p) for p, label in re.findall(r"([0-9.]+)%\s+\d+\s+(\w+)", out)}
        assert by_class[true] == pytest.approx(float(shown), abs=0.06), (name, out)
