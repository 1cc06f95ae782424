"""MODEL_CARD.md: the facts of report.json, written after training and again after an export."""

import json

import pytest

from tests.helpers import make_image_folder, tiny_config
from transferkit.deploy.export import export_run
from transferkit.model.factory import create_model
from transferkit.train.engine import fit


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    # Class names that try to break the Markdown: a table cell, a link, HTML.
    make_image_folder(root / "data", classes=("a|b", "<b>[x](y)"), per_class=30, size=20)
    weights = root / "tiny.pt"
    import torch

    trained = create_model("tests.helpers:TinyNet")
    trained.train()
    trained(torch.rand(8, 3, 16, 16))  # moves the BatchNorm statistics: a trained-looking file
    torch.save(trained.state_dict(), weights)
    config = tiny_config(root / "data", root / "run", weights=str(weights), strategy="freeze")
    summary = fit(config, log=lambda m: None)
    return root / "run", summary


def test_the_card_states_weights_training_data_results_and_environment(run):
    folder, summary = run
    card = (folder / "MODEL_CARD.md").read_text()
    report = json.loads((folder / "report.json").read_text())
    assert "loaded: " in card and "verification: ok" in card
    assert report["parameters"]["trained"] == {"fc": 34} and "conv1" in report["parameters"]["frozen"]
    assert "- trained: `fc` (34)" in card and "`conv1` (216)" in card
    assert report["preprocessing"]["crop_mode"] == "center" and "- preprocessing: 16x16 px, center crop" in card
    assert report["environment"]["torch"] in card and report["environment"]["timm"] in card
    assert "| a\\|b | 24 | 6 |" in card  # the class name cannot split the table
    assert "\\<b\\>\\[x\\](y)" in card and "<b>" not in card
    assert f"accuracy {summary['best']['val_acc']:.4f}" in card
    assert "## Calibration" in card and "## Exports" not in card


def test_an_export_adds_its_parity_to_the_card_and_the_report(run):
    folder, _ = run
    result = export_run(folder, format="safetensors", trust_code=True, log=lambda m: None)
    card = (folder / "MODEL_CARD.md").read_text()
    exports = json.loads((folder / "report.json").read_text())["exports"]
    assert exports["model.safetensors"]["parity"] == result.parity
    assert "## Exports" in card and "model.safetensors | fp32 | 12 | 0 | 100.00%" in card
