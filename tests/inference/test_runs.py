"""inference/runs.py: a finished run rebuilt from its checkpoint, into a fresh model or a module given, and scored."""

import pytest
import torch

from tests.helpers import TinyNet
from transferkit.data.decode import decode
from transferkit.data.sources import open_data, split_items
from transferkit.errors import ModelSpecError, RunError
from transferkit.inference.runs import evaluate_classes, held_out_outputs, load_trained


def test_a_run_is_rebuilt_with_its_best_weights_into_a_fresh_model_or_a_module_given(run):
    folder, _ = run
    best = torch.load(folder / "best.pt", weights_only=False)
    trained = load_trained(folder, device="cpu", trust_code=True)
    assert trained.class_names == ["cat", "dog"] and trained.epoch == best["epoch"]
    assert all(torch.equal(v, best["model"][k]) for k, v in trained.model.state_dict().items())
    mine = TinyNet(num_classes=2)
    again = load_trained(folder, device="cpu", model=mine)  # no code imported: the module is the user's
    assert again.model is mine and not mine.training
    assert all(torch.equal(v, best["model"][k]) for k, v in mine.state_dict().items())
    with pytest.raises(RunError, match="builds its model by running code"):
        load_trained(folder, device="cpu")  # the run's MODEL is code, and trust_code was not given
    with pytest.raises(RunError, match="its weights do not fit the model its config builds"):
        load_trained(folder, device="cpu", model=TinyNet(num_classes=3))


def test_scores_on_the_held_out_images_are_those_training_validated(run):
    folder, data = run
    trained = load_trained(folder, device="cpu", trust_code=True)
    _, val = split_items(open_data(str(data)).train, val_fraction=0.2, seed=0)  # the run's own split
    decoded = decode(val, trained.preprocessing)
    result = evaluate_classes(trained, decoded, about={"split": "the run's held-out split"})
    assert result["images"] == len(val) == 4
    assert result["validation"]["same"], result["validation"]
    logits, targets = held_out_outputs(trained, decoded, None)
    assert logits.shape == (4, 2) and torch.equal(targets, decoded.labels)
    assert float((logits.argmax(1) == targets).double().mean()) == result["accuracy"]


def test_a_run_of_a_module_given_from_python_needs_the_module(tmp_path):
    import transferkit as tk

    x, y = torch.randn(40, 3, 16, 16), torch.arange(40) % 2
    learner = tk.fit(TinyNet(2), (x, y), epochs=1, out=tmp_path / "py", precision="fp32", channels_last=False)
    with pytest.raises(ModelSpecError, match="is a module that was given from Python; no name rebuilds it"):
        load_trained(learner.run, device="cpu", trust_code=True)
    assert load_trained(learner.run, device="cpu", model=TinyNet(2)).class_names == ["0", "1"]
