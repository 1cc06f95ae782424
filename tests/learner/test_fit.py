"""``tk.fit`` on the user's own module and data, and the Learner it returns."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset

import transferkit as tk
from tests.helpers import TinyNet, make_image_folder
from transferkit.errors import ConfigError, DataError, FreezeError

FAST = {"precision": "fp32", "channels_last": False, "batch_size": 16}


def blobs(n=60, classes=3, seed=0):
    """Float images (N, 3, 16, 16) whose class shifts their mean: a tiny model learns them in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 16, 16, generator=g) + (y.float() - 1).view(-1, 1, 1, 1) * 2
    return x, y


class Shapes(Dataset):
    """PIL images of two classes (dark and bright) with their names, as torchvision's datasets have them."""

    classes = ["dark", "bright"]

    def __init__(self, n=40, transform=None):
        rng = np.random.default_rng(0)
        self.images = [
            Image.fromarray(np.clip(rng.normal(60 + 120 * (i % 2), 20, (20, 20, 3)), 0, 255).astype("uint8"))
            for i in range(n)
        ]
        self.targets = [i % 2 for i in range(n)]
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        return (self.transform(image) if self.transform else image), self.targets[i]


class Jittered(Dataset):
    """Float tensors with noise drawn at each read: a random transform."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn_like(self.x[i]), int(self.y[i])


def lines():
    found = []
    return found, found.append


def test_as_is_keeps_the_users_freezing_and_caches_the_frozen_layers():
    torch.manual_seed(0)
    model = TinyNet(3)
    tk.freeze(model, ["conv1", "bn1"])
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    stats = model.bn1.running_mean.clone()
    log, say = lines()
    learner = tk.fit(model, blobs(), epochs=2, log=say, **FAST)
    assert any(line.startswith("strategy as-is: your model's own freezing: 3 of 8") for line in log)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert torch.equal(model.bn1.running_mean, stats)  # frozen BatchNorm held in eval mode
    assert [row["cached"] for row in learner.history] == [True, True]
    assert learner.model is model and learner.summary["best"]["epoch"] in (1, 2)
    assert learner.history.to_pandas().shape[0] == 2
    assert "history of" in str(learner.history) and "<table>" in learner.history._repr_html_()


def test_random_transforms_get_no_cache_and_the_log_says_why():
    x, y = blobs()
    model = TinyNet(3)
    tk.freeze(model, ["conv1", "bn1"])
    log, say = lines()
    learner = tk.fit(model, Jittered(x, y), epochs=1, log=say, **FAST)
    assert any(line.startswith("cache: off: reading an item of train twice gave different tensors") for line in log)
    assert [row["cached"] for row in learner.history] == [False]


@pytest.mark.parametrize("strategy", ["full", "freeze", "gradual", "lp-ft", "bitfit", "lora"])
def test_every_strategy_trains_a_module_of_the_users(strategy):
    torch.manual_seed(0)
    model = TinyNet(3)
    log, say = lines()
    learner = tk.fit(model, blobs(), strategy=strategy, epochs=2, log=say, **FAST)
    assert len(learner.history) == 2
    assert learner.summary["strategy"] == strategy
    assert learner.predict(blobs(4)[0]).labels[0] in ("0", "1", "2")


def test_a_module_learns_and_save_then_load_learner_predicts_the_same(tmp_path):
    torch.manual_seed(0)
    x, y = blobs(90)
    learner = tk.fit(TinyNet(3), (x[:60], y[:60]), (x[60:], y[60:]), strategy="full", epochs=6, lr=1e-2, **FAST)
    scores = learner.evaluate((x[60:], y[60:]))
    assert scores["accuracy"] > 0.9 and scores["images"] == 30
    before = learner.predict(x[60:70])
    kept = learner.save(tmp_path / "kept")
    again = tk.load_learner(kept, model=TinyNet(3))
    after = again.predict(x[60:70])
    assert after.labels == before.labels
    probabilities = [[r["probability"] for r in p.display_rows()] for p in (after, before)]
    assert probabilities[0] == pytest.approx(probabilities[1])
    with pytest.raises(
        ConfigError, match=r"^model: run .* trained a module given from Python \(tests.helpers.TinyNet\)"
    ):
        tk.load_learner(kept)


def test_a_dataset_of_pil_images_gets_the_models_preprocessing_and_its_class_names(tmp_path):
    learner = tk.fit(TinyNet(2), Shapes(), strategy="full", epochs=2, lr=1e-2, **FAST)
    assert learner.class_names == ["dark", "bright"]
    assert list(learner.summary["preprocessing"]["input_size"]) == [3, 16, 16]
    image = Shapes(2).images[1]
    folder = make_image_folder(tmp_path / "folder", per_class=2)
    files = sorted(str(p) for p in folder.rglob("*.png"))
    inputs = {
        "PIL": image,
        "array": np.asarray(image),
        "arrays": np.stack([np.asarray(image)] * 2),
        "uint8 tensor": torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous(),
        "path": files[0],
        "paths": files,
        "folder": folder,
        "list of PIL": [image, image],
    }
    counts = {name: len(learner.predict(value)) for name, value in inputs.items()}
    assert counts == {
        "PIL": 1,
        "array": 1,
        "arrays": 2,
        "uint8 tensor": 1,
        "path": 1,
        "paths": 4,
        "folder": 4,
        "list of PIL": 2,
    }
    assert learner.predict(image).labels == learner.predict(np.asarray(image)).labels
    written = learner.predict_to_file(folder, tmp_path / "p.csv", workers=0)
    with open(written.out) as f:
        rows = list(csv.DictReader(f))
    assert written.images == 4 and [r["image"] for r in rows] == [str(Path(p).relative_to(folder)) for p in files]
    assert [r["class_1"] for r in rows] == learner.predict(files).labels


def test_tensors_a_dataset_made_predict_from_an_image_through_its_transform():
    from torchvision.transforms import v2

    transform = v2.Compose([v2.PILToTensor(), v2.Resize((16, 16)), v2.ToDtype(torch.float32, scale=True)])
    learner = tk.fit(TinyNet(2), Shapes(transform=transform), strategy="full", epochs=1, **FAST)
    image = Shapes(2).images[0]
    assert len(learner.predict(image)) == 1  # the training Dataset's transform
    learner.transform = None
    with pytest.raises(DataError, match=r"^transform: this run trained on tensors"):
        learner.predict(image)
    assert len(learner.predict(transform(image))) == 1


def test_a_dataloader_and_a_torchvision_image_folder(tmp_path):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    root = make_image_folder(tmp_path / "data", per_class=10)
    transform = v2.Compose([v2.PILToTensor(), v2.Resize((16, 16)), v2.ToDtype(torch.float32, scale=True)])
    folder = ImageFolder(root, transform=transform)
    log, say = lines()
    learner = tk.fit(TinyNet(2), DataLoader(folder, batch_size=4), strategy="freeze", epochs=1, log=say, **FAST)
    assert learner.class_names == ["cat", "dog"]
    assert learner.history[0]["cached"] is True  # deterministic transforms: the frozen layers ran once
    assert learner.config.data == "object:torchvision.datasets.folder.ImageFolder"


def test_several_labels_and_numbers_follow_from_the_targets():
    x, y = blobs(60)
    multi = torch.stack([(y == 0) | (y == 1), y == 2, y != 1], 1).float()
    learner = tk.fit(TinyNet(3), (x, multi), strategy="full", epochs=1, **FAST)
    assert learner.task == "multi-label" and learner.class_names == ["0", "1", "2"]
    assert isinstance(learner.predict(x[:2]).labels[0], list)
    numbers = y.float() * 1.5 + 0.25
    learner = tk.fit(TinyNet(1), (x, numbers), strategy="full", epochs=1, **FAST)
    assert learner.task == "regression"
    assert isinstance(learner.predict(x[:2]).labels[0], float)


def test_fit_with_a_config_returns_a_learner(tmp_path):
    from tests.helpers import tiny_config

    root = make_image_folder(tmp_path / "data", per_class=6)
    learner = tk.fit(tiny_config(root, tmp_path / "run", epochs=1))
    assert learner.run == tmp_path / "run" and len(learner.history) == 1
    assert learner.evaluate()["images"] == sum(learner.summary["class_counts"]["val"].values()) == 3


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(3, 16, 16), 0


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: tk.fit(TinyNet(5), blobs()),
            ConfigError,
            r"^model: its head 'fc' gives 5 outputs and train has 3 classes: replace it first with "
            r"tk\.replace_head\(model, 3\)",
        ),
        (lambda: tk.fit(TinyNet(3), Stream()), DataError, r"^train: an IterableDataset cannot be split"),
        (
            lambda: tk.fit(TinyNet(3), blobs(10)),
            DataError,
            r"^val_fraction 0.2 of 10 images holds 2, fewer than the 3 classes: give a validation set of its own",
        ),
        (lambda: tk.fit(TinyNet(3), [1, 2, 3]), DataError, r"^train: item 0 is a int"),
        (lambda: tk.fit(TinyNet(3), blobs(), weights="lite0"), ConfigError, r"^weights: a module is trained as given"),
        (lambda: tk.fit(TinyNet(3), blobs(), strategy="scratch"), ConfigError, r"^strategy scratch rebuilds MODEL"),
        (
            lambda: tk.fit(tk.freeze(m := TinyNet(3), "*") and m, blobs()),
            FreezeError,
            r"^model: every parameter of the TinyNet is frozen",
        ),
        (
            lambda: tk.fit(TinyNet(3), blobs(), task="regression"),
            DataError,
            r"^task is regression, and train's targets are class indices",
        ),
        (
            lambda: tk.fit(TinyNet(3), (torch.zeros(4, 3, 16, 16), torch.zeros(3))),
            DataError,
            r"^train: 4 images and 3 targets",
        ),
    ],
)
def test_refused_inputs_are_one_line_naming_the_python_argument(call, error, message):
    with pytest.raises(error, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_predict_refuses_what_it_cannot_read():
    learner = tk.fit(TinyNet(3), blobs(), strategy="full", epochs=1, **FAST)
    for value, message in [
        (123, r"^images: expected a path, a folder, a PIL image"),
        (torch.zeros(2, 2), r"^images: a tensor must be \(C, H, W\) or \(N, C, H, W\)"),
        (torch.zeros(3, 8, 8), r"^images: the run trained on tensors of shape \(3, 16, 16\)"),
        ([], r"^images: the list is empty"),
    ]:
        with pytest.raises(DataError, match=message):
            learner.predict(value)


def test_export_of_a_module_run_is_proven_and_leaves_the_module_as_it_is(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(3)
    learner = tk.fit(model, blobs(), strategy="lora", epochs=1, **FAST)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = learner.export(tmp_path / "out" / "tiny.onnx")
    assert (tmp_path / "out" / "tiny.onnx").is_file()
    assert result.parity["images"] == 12 and "held-out split: 12 of 12 images" in result.parity["split"]
    assert result.parity["top1_agreement"] == 1.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # not merged, not moved
    again = tk.load_learner(learner.save(tmp_path / "kept"), model=model)
    with pytest.raises(ConfigError, match=r"^data: the export is proven on held-out images"):
        again.export(tmp_path / "again.onnx")
    assert again.export(tmp_path / "again.onnx", data=blobs(20)).parity["images"] == 20


def test_report_and_plot_show_in_a_notebook(tmp_path):
    torch.manual_seed(0)
    x, y = blobs(60)
    learner = tk.fit(
        TinyNet(3), (x[:40], y[:40]), (x[40:], y[40:]), strategy="full", epochs=2, out=tmp_path / "run", **FAST
    )
    scores = learner.evaluate()  # the held-out split fit read
    assert scores["images"] == 20 and scores["validation"]["same"], scores.get("validation")
    assert str(scores).startswith("20 images: accuracy ") and "per class" in str(scores)
    assert "<table>" in scores._repr_html_()
    page = learner.report()
    assert page.path == tmp_path / "run" / "report.html"
    saved = tk.load_learner(tmp_path / "run", model=learner.model)
    with pytest.raises(ConfigError, match=r"^data: this run trained on a Dataset of yours"):
        saved.report()
    page = saved.report((x[40:], y[40:]))
    assert page._repr_html_().startswith("<iframe srcdoc=") and "data:image/png;base64," in page.path.read_text()
    plot = learner.plot()
    assert plot._repr_png_()[:4] == b"\x89PNG" and plot.save(tmp_path / "c.png").stat().st_size > 1000


def test_resume_continues_a_run_of_a_module_on_the_same_datasets(tmp_path):
    torch.manual_seed(0)
    x, y = blobs(60)
    first = TinyNet(3)
    tk.freeze(first, "conv1")
    tk.fit(first, (x, y), epochs=2, out=tmp_path / "run", **FAST)
    log, say = lines()
    again = tk.fit(TinyNet(3), (x, y), epochs=3, out=tmp_path / "run", resume=True, log=say)
    assert [row["epoch"] for row in again.history] == [1, 2, 3]
    assert any(line.startswith("extended from 2 to 3 epochs") for line in log)
    assert not again.model.conv1.weight.requires_grad  # the run's own plan, not the fresh module's
    with pytest.raises(
        Exception, match=r"^Cannot resume: the images of 'object:torch.utils.data.dataset.TensorDataset'"
    ):
        tk.fit(TinyNet(3), (x + 1, y), epochs=4, out=tmp_path / "run", resume=True)


def test_as_is_with_only_the_head_trainable_is_a_linear_probe():
    model = TinyNet(3)
    tk.freeze(model, ["conv1", "bn1", "layer1"])
    log, say = lines()
    learner = tk.fit(model, blobs(), epochs=1, log=say, **FAST)
    assert learner.summary["strategy"] == "freeze" and learner.history[0]["lr"] == 1e-2
    assert any("only its head 'fc' trains, the 6 other parameter tensors are frozen" in line for line in log)


def test_a_run_folder_of_code_runs_none_of_it_unless_asked(tmp_path):
    from tests.helpers import tiny_config
    from transferkit.errors import RunError

    root = make_image_folder(tmp_path / "data", per_class=6)
    tk.fit(tiny_config(root, tmp_path / "run", epochs=1), log=lambda m: None)
    for learner in (tk.Learner(tmp_path / "run"), tk.load_learner(tmp_path / "run")):
        with pytest.raises(RunError, match="builds its model by running code .* pass trust_code only if you trust it"):
            learner.predict(root / "cat" / "0.png")
    assert tk.load_learner(tmp_path / "run", trust_code=True).class_names == ["cat", "dog"]


def test_a_run_of_a_config_stopped_early_is_resumed_and_lengthened(tmp_path):
    from tests.helpers import tiny_config

    root = make_image_folder(tmp_path / "data", per_class=6)
    config = tiny_config(root, tmp_path / "run", epochs=2)
    first = tk.fit(config, stop_after=1, log=lambda m: None)
    assert [row["epoch"] for row in first.history] == [1]
    log, say = lines()
    again = tk.fit(config, resume=True, epochs=3, trust_code=True, log=say)
    assert [row["epoch"] for row in again.history] == [1, 2, 3]
    assert any(line.startswith("extended from 2 to 3 epochs") for line in log)
