"""A run handed on as a timm Hub folder: timm alone, through the stand-in hub, gives predict's answers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import make_image_folder, tiny_config
from tests.weights.stand_in_hub import StandInHub
from transferkit.data.decode import decode
from transferkit.data.items import Item
from transferkit.data.preprocess import BatchPrep
from transferkit.deploy.export import export_run
from transferkit.deploy.push import push_run
from transferkit.errors import ConfigError, RunError
from transferkit.inference.predict import load_predictor
from transferkit.inference.runs import load_trained
from transferkit.train.engine import fit

# Runs in a process of its own with timm, torch and PIL only; prints what timm made of the folder.
TIMM_ALONE = """
import json, sys
import timm, torch
from PIL import Image

model = timm.create_model("hf-hub:me/fine-tuned", pretrained=True).eval()
config = timm.data.resolve_data_config({}, model=model)
transform = timm.data.create_transform(**config)
batch = torch.stack([transform(Image.open(path).convert("RGB")) for path in sys.argv[2:]])
same_input = torch.load(sys.argv[1], weights_only=True)  # transferkit's own preprocessing of the images
with torch.no_grad():
    probabilities = model(batch).softmax(-1)
    logits = model(same_input)
print(json.dumps({
    "logits": logits.tolist(),
    "label_names": model.pretrained_cfg["label_names"],
    "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
    "probabilities": probabilities.tolist(),
    "transferkit_imported": any(name.startswith("transferkit") for name in sys.modules),
}))
"""


def _serving(tmp_path, monkeypatch) -> StandInHub:
    """A stand-in hub that huggingface_hub in this process uploads to, with a token."""
    import huggingface_hub.constants as constants

    hub = StandInHub(tmp_path / "served")
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in")
    return hub


# A ViT with LoRA adapters (merged into timm's own layers) and a CNN with BatchNorm
@pytest.mark.parametrize("model,strategy", [("test_vit", "lora"), ("test_resnet", "full")])
def test_timm_alone_loads_the_pushed_folder_from_the_hub_with_the_runs_classes_and_answers(
    tmp_path, model, strategy, monkeypatch
):
    make_image_folder(tmp_path / "data", classes=("cat", "dog", "owl"), per_class=10, size=24)
    config = tiny_config(
        tmp_path / "data", tmp_path / "run", model=model, strategy=strategy, image_size=32, epochs=2, lr=0.01
    )
    fit(config, log=lambda m: None)
    result = export_run(tmp_path / "run", format="timm-hub", trust_code=True, log=lambda m: None)
    folder = tmp_path / "run" / "timm-hub"
    assert result.path == folder and sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert (
        result.parity["max_abs_diff"] < 1e-4 * max(1.0, result.parity["scale"]) and result.parity["top1_agreement"] == 1
    )
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: timm\n") and "fine-tuned" in readme  # the model card follows
    assert 'create_model("hf-hub:ORG/REPO"' in readme
    assert "timm-hub" in json.loads((tmp_path / "run" / "report.json").read_text())["exports"]

    hub = _serving(tmp_path, monkeypatch)
    try:
        url = push_run(tmp_path / "run", "me/fine-tuned", log=lambda m: None)  # huggingface_hub's upload API
        assert url.startswith(f"{hub.url}/me/fine-tuned/commit/") and hub.created[0]["name"] == "fine-tuned"
        assert hub.commits[0][2] == "Upload run from transferkit" and len(hub.commits[0][3]) == 3
        assert hub.validated == [{"library_name": "timm", "tags": ["image-classification", "timm", "transferkit"]}]
        images = sorted(str(p) for p in (tmp_path / "data").glob("*/*.png"))[::5]
        trained = load_trained(tmp_path / "run", trust_code=True, device="cpu")
        decoded = decode([Item(path, 0, path=Path(path)) for path in images], trained.preprocessing).images
        prepared = BatchPrep(trained.preprocessing, torch.device("cpu"), channels_last=False)(decoded)
        torch.save(prepared, tmp_path / "prepared.pt")
        with torch.no_grad():
            reference = trained.model(prepared)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "PYTHONPATH": ""}
        command = [sys.executable, "-c", TIMM_ALONE, str(tmp_path / "prepared.pt"), *images]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    finally:
        hub.close()
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert not seen["transferkit_imported"] and seen["label_names"] == ["cat", "dog", "owl"]
    pre = load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu").preprocessing
    assert seen["config"]["input_size"] == list(pre.input_size) and seen["config"]["crop_pct"] == pre.crop_pct
    assert seen["config"]["mean"] == pytest.approx(pre.mean) and seen["config"]["interpolation"] == pre.interpolation
    # the same input gives the same logits: the folder holds the run's model
    torch.testing.assert_close(torch.tensor(seen["logits"]), reference, atol=1e-5, rtol=1e-5)
    # timm's own transform of the files gives predict's answers: the folder holds the run's preprocessing too
    # (the two resize a 24 px image to 37 px with their own bicubic code: probabilities differ in the 3rd place)
    predictor = load_predictor(str(tmp_path / "run"), trust_code=True, device="cpu", uncalibrated=True)
    for answer, probabilities in zip(predictor.predict(images, top_k=3), seen["probabilities"]):
        by_timm = {name: p for name, p in zip(seen["label_names"], probabilities)}
        assert answer["top"][0]["label"] == max(by_timm, key=by_timm.get)
        for top in answer["top"]:
            assert top["probability"] == pytest.approx(by_timm[top["label"]], abs=0.02)


def test_a_model_timm_does_not_build_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    make_image_folder(tmp_path / "data", per_class=6, size=20)
    fit(tiny_config(tmp_path / "data", tmp_path / "run", epochs=1), log=lambda m: None)
    with pytest.raises(ConfigError, match="The timm-hub format needs a timm model; this run's MODEL is 'tests.helpers"):
        export_run(tmp_path / "run", format="timm-hub", trust_code=True, log=lambda m: None)
    assert not (tmp_path / "run" / "timm-hub").exists()


def test_the_pushed_readme_names_its_repository_and_bad_pushes_are_one_line(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "data", per_class=6, size=24)
    config = tiny_config(tmp_path / "data", tmp_path / "run", model="test_resnet", image_size=32, epochs=1)
    fit(config, log=lambda m: None)
    hub = _serving(tmp_path, monkeypatch)
    try:
        for bad, words in [("no-owner", "names no owner"), ("me/bad name!", "not a Hub repository id")]:
            with pytest.raises(ConfigError, match=words):
                push_run(tmp_path / "run", bad, log=lambda m: None)
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
        with pytest.raises(RunError, match="refused the upload to 'me/net' as unauthorised: set HF_TOKEN"):
            push_run(tmp_path / "run", "me/net", log=lambda m: None)  # exported first, then refused
        assert hub.commits == [] and (tmp_path / "run" / "timm-hub" / "config.json").is_file()
        monkeypatch.setenv("HF_TOKEN", "hf_stand_in")
        push_run(tmp_path / "run", "me/net", revision="v1", message="first", log=lambda m: None)
    finally:
        hub.close()
    assert hub.commits[0][:3] == ("me/net", "v1", "first")
    readme = (tmp_path / "served" / "repos" / "me" / "net" / "README.md").read_text()
    assert 'timm.create_model("hf-hub:me/net", pretrained=True)' in readme
