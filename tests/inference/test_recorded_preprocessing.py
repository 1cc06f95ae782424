"""A run keeps the preprocessing it was trained with: one recorded before crop modes were applied is read as the
centre crop its weights saw, and says so when it is loaded and when it is resumed."""

from __future__ import annotations

import torch

import transferkit as tk
from tests.helpers import make_image_folder, tiny_config
from transferkit.data.preprocess import APPLIED
from transferkit.inference.runs import load_trained
from transferkit.train.engine import fit


def _as_before_crop_modes(run, crop_mode: str) -> None:
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / name, weights_only=True)
        state["preprocessing"].pop(APPLIED)
        state["preprocessing"]["crop_mode"] = crop_mode
        torch.save(state, run / name)


def test_an_earlier_squash_run_keeps_its_centre_crop_when_loaded_and_resumed(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=6, size=24)
    run = tmp_path / "run"
    fit(tiny_config(data, run, epochs=1), log=lambda m: None)
    assert torch.load(run / "best.pt", weights_only=True)["preprocessing"][APPLIED] is True
    _as_before_crop_modes(run, "squash")

    trained = load_trained(run, device="cpu", trust_code=True)
    assert trained.preprocessing.crop_mode == "center"
    assert any("recorded before crop modes were applied" in note for note in trained.notes)
    assert tk.eval_transform(trained).preprocessing == trained.preprocessing  # what the run feeds, from Python

    lines: list[str] = []
    fit(resume=run, changes={"epochs": 2}, trust_code=True, log=lines.append)
    assert any(line.startswith("note: preprocessing recorded before crop modes") for line in lines)
    assert any("center crop" in line and "from the run being resumed" in line for line in lines), lines
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["preprocessing"]["crop_mode"] == "center" and state["preprocessing"][APPLIED] is True
