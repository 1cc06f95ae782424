"""predict and eval straight from weights: the architecture a file fits, its outputs met with DATA's classes."""

import pytest
import torch
import torchvision

from tests.helpers import make_image_folder
from transferkit.errors import TransferkitError
from transferkit.inference.predict import load_predictor
from transferkit.inference.runs import _data_classes_only, evaluate_run
from transferkit.model.factory import create_model


@pytest.fixture(scope="module")
def squeezenet_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "sq.pth"
    torch.save(torchvision.models.squeezenet1_1(num_classes=2).state_dict(), path)
    return path


def test_eval_of_a_file_builds_the_architecture_it_fits_and_agrees_with_predict(tmp_path, squeezenet_file):
    data = make_image_folder(tmp_path / "data", per_class=5, size=32)
    result = evaluate_run(str(squeezenet_file), str(data), device="cpu")
    assert result["class_names"] == ["cat", "dog"] and result["images"] == 10
    assert any("torchvision:squeezenet1_1" in line for line in result["notes"])
    assert any("sorted order" in line for line in result["notes"])
    predictor = load_predictor(str(squeezenet_file), device="cpu")
    images = sorted(data.glob("*/*.png"))
    predicted = [p["top"][0]["index"] for p in predictor.predict(images, top_k=1)]
    truth = [0 if image.parent.name == "cat" else 1 for image in images]
    correct = sum(p == t for p, t in zip(predicted, truth))
    assert result["accuracy"] == pytest.approx(correct / len(images))
    assert sum(map(sum, result["confusion_matrix"])) == 10


def test_eval_of_weights_needs_data_and_a_head_of_data_s_size(tmp_path, squeezenet_file):
    with pytest.raises(TransferkitError, match=r"needs data \(DATA\); a run folder knows its own"):
        evaluate_run(str(squeezenet_file), device="cpu")
    three = make_image_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=2, size=32)
    with pytest.raises(TransferkitError, match="3 classes and the weights' head 2 outputs"):
        evaluate_run(str(squeezenet_file), str(three), device="cpu")


def test_a_named_head_keeps_only_data_s_classes_in_the_matrix():
    confusion = torch.zeros(5, 5, dtype=torch.long)
    confusion[1, 1], confusion[1, 4], confusion[3, 1], confusion[3, 0] = 4, 2, 1, 3
    square, names = _data_classes_only(confusion, ["a", "b", "c", "d", "e"], [1, 3])
    assert names == ["b", "d", "(other)"]
    assert square.tolist() == [[4, 0, 2], [1, 0, 3], [0, 0, 0]]


def test_a_file_that_fits_implementations_computing_differently_needs_model(tmp_path):
    state = create_model("mobilenetv3_small_075", num_classes=3).state_dict()  # tf_ has the same names
    torch.save(state, tmp_path / "mnv3.pth")
    with pytest.raises(TransferkitError, match="compute differently; give --model MODEL"):
        load_predictor(str(tmp_path / "mnv3.pth"), device="cpu")
    predictor = load_predictor(str(tmp_path / "mnv3.pth"), model="mobilenetv3_small_075", device="cpu")
    assert predictor.class_names == ["0", "1", "2"]  # the head's size comes from the file


def test_eval_command_on_a_file_with_model(tmp_path, squeezenet_file, cli, cli_json):
    data = make_image_folder(tmp_path / "data", per_class=3, size=32)
    command = ["eval", squeezenet_file, "--data", data]
    assert cli_json(*command, "--model", "torchvision:squeezenet1_1", "--device", "cpu")["images"] == 6
    code, _, err = cli(*command, "--report")
    assert code == 2 and "report needs a run folder" in err
