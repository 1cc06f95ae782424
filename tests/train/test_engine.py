import pytest
import torch

from tests.helpers import make_image_folder
from transferkit import TransferkitError
from transferkit.inference.predict import load_predictor
from transferkit.inference.runs import evaluate_run
from transferkit.train.config import TrainConfig
from transferkit.train.engine import fit
from transferkit.train.folder.run_folder import load_run

TINY = "tests.helpers:TinyNet"


def config(tmp_path, name="run", **overrides):
    # Pinned precision and memory format: runs compared bitwise must use the same kernels.
    values = dict(model=TINY, data="builtin:digits", out=str(tmp_path / name), epochs=2, image_size=16, batch_size=64)
    values.update(precision="fp32", channels_last=False)
    values.update(overrides)
    return TrainConfig(**values)


def state(run):
    return load_run(run)["model"]


def quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Runs trained without interruption, once per distinct settings for the whole module: (summary, folder)."""
    done = {}

    def run(**settings):
        key = repr(sorted(settings.items()))
        if key not in done:
            folder = tmp_path_factory.mktemp("straight")
            done[key] = fit(config(folder, **settings), log=quiet), folder / "run"
        return done[key]

    return run


@pytest.mark.parametrize("cache", [True, False])
def test_freeze_leaves_backbone_and_bn_buffers_bitwise_unchanged(tmp_path, cache):
    torch.manual_seed(0)
    init = tmp_path / "init.pth"
    from tests.helpers import TinyNet

    torch.save(TinyNet(num_classes=10).state_dict(), init)
    fit(config(tmp_path, strategy="freeze", weights=str(init), cache=cache), log=quiet)
    before, after = torch.load(init), state(tmp_path / "run")
    for key, value in before.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(after[key], value), key
    assert not torch.equal(after["fc.weight"], torch.zeros_like(after["fc.weight"]))


def test_head_strategy_freezes_only_what_was_asked(tmp_path):
    torch.manual_seed(0)
    init = tmp_path / "init.pth"
    from tests.helpers import TinyNet

    torch.save(TinyNet(num_classes=10).state_dict(), init)
    fit(config(tmp_path, strategy="head", weights=str(init), freeze=["conv1", "bn1"]), log=quiet)
    before, after = torch.load(init), state(tmp_path / "run")
    for key in (
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ):
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["layer1.0.weight"], before["layer1.0.weight"])
    assert not torch.equal(after["layer1.1.running_mean"], before["layer1.1.running_mean"])


def test_cached_head_inputs_give_the_same_result(tmp_path, straight):
    with_cache, cached_run = straight(strategy="freeze", epochs=3, lr=0.03)
    without = fit(config(tmp_path, "b", strategy="freeze", epochs=3, lr=0.03, cache=False), log=quiet)
    assert [e["cached"] for e in with_cache["epochs"]] == [True] * 3
    assert [e["cached"] for e in without["epochs"]] == [False] * 3
    # The cache holds fp16 when its round trip is within 1e-3 of the activations' scale.
    a, b = state(cached_run)["fc.weight"], state(tmp_path / "b")["fc.weight"]
    torch.testing.assert_close(a, b, atol=1e-3 * b.abs().max().item(), rtol=0)
    assert abs(with_cache["best_val_acc"] - without["best_val_acc"]) <= 0.005


def test_data_and_cache_beyond_memory_are_memory_mapped_with_the_same_result(tmp_path, monkeypatch, straight):
    in_memory, in_memory_run = straight(strategy="freeze", epochs=3, lr=0.03)
    monkeypatch.setattr("transferkit.train.setup.memory_budget", lambda: 1000)
    monkeypatch.setattr("transferkit.train.cache.feature_cache.memory_budget", lambda: 1000)
    lines = []
    mapped = fit(config(tmp_path, "b", strategy="freeze", epochs=3, lr=0.03), log=lines.append)
    assert any("train images memory-mapped" in line and "val images memory-mapped" in line for line in lines)
    assert any(line.startswith("cache:") and "memory-mapped" in line for line in lines)
    a, b = state(in_memory_run), state(tmp_path / "b")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert [e["val_acc"] for e in mapped["epochs"]] == [e["val_acc"] for e in in_memory["epochs"]]
    assert not list((tmp_path / "b").glob("tmp*.bin"))  # the decoded images' file is gone


@pytest.mark.parametrize("strategy, stop", [("full", 1), ("gradual", 1), ("lp-ft", 2)])
def test_resume_continues_exactly(tmp_path, straight, strategy, stop):
    summary, straight_run = straight(strategy=strategy, epochs=3)
    fit(config(tmp_path, "split", strategy=strategy, epochs=3), stop_after=stop, log=quiet)
    assert load_run(tmp_path / "split")["epoch"] == stop
    resumed = fit(resume=tmp_path / "split", trust_code=True, log=quiet)
    a, b = state(straight_run), state(tmp_path / "split")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [e["val_acc"] for e in summary["epochs"]] == [e["val_acc"] for e in resumed["epochs"]]
    assert load_run(tmp_path / "split")["frozen"] == load_run(straight_run)["frozen"]


def test_fp16_scales_the_loss_learns_like_fp32_and_resumes_exactly(tmp_path, straight):
    # The same GradScaler path as on CUDA, run on the CPU.
    settings = dict(strategy="full", epochs=3, lr=0.03)
    summary, straight_run = straight(precision="fp16", **settings)
    fit(config(tmp_path, "split", precision="fp16", **settings), stop_after=1, log=quiet)
    assert load_run(tmp_path / "split")["scaler"]["_growth_tracker"] > 0  # steps since the scale last changed
    resumed = fit(resume=tmp_path / "split", trust_code=True, log=quiet)
    assert load_run(tmp_path / "split")["scaler"] == load_run(straight_run)["scaler"]
    a, b = state(straight_run), state(tmp_path / "split")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert [e["val_acc"] for e in summary["epochs"]] == [e["val_acc"] for e in resumed["epochs"]]
    exact, _ = straight(precision="fp32", **settings)
    assert exact["best_val_acc"] > 0.3
    assert abs(summary["best_val_acc"] - exact["best_val_acc"]) < 0.05


def test_run_learns_and_is_usable_alone(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=20)
    summary = fit(config(tmp_path, data=str(data), strategy="scratch", epochs=4, lr=1e-2, batch_size=8), log=quiet)
    assert summary["best_val_acc"] == 1.0
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 5
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    result = evaluate_run(tmp_path / "run", trust_code=True)
    assert result["accuracy"] == 1.0 and result["confusion_matrix"] == [[4, 0], [0, 4]]
    predictions = load_predictor(str(tmp_path / "run"), trust_code=True).predict([data / "dog" / "0.png"], top_k=2)
    assert predictions[0]["top"][0]["label"] == "dog"


def test_bad_settings_fail_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for overrides, message in [
        (dict(strategy="warp"), "strategy must be one of auto, full, freeze"),
        (dict(data=str(tmp_path / "missing")), "does not exist"),
        (dict(out=str(blocker / "run")), "Cannot write to output folder"),
        (dict(strategy="head"), "needs freeze patterns or unfreeze_last"),
        (dict(device="cuda:0" if not torch.cuda.is_available() else "tpu"), "cuda|Unknown device"),
    ]:
        with pytest.raises(TransferkitError, match=message):
            fit(config(tmp_path, **overrides), log=quiet)
    with pytest.raises(TransferkitError, match="not a transferkit run"):
        fit(resume=tmp_path, log=quiet)
    with pytest.raises(TransferkitError, match="Unknown training settings: colour"):
        TrainConfig.from_dict({"model": "m", "data": "d", "out": "o", "colour": 1})


def test_existing_run_is_not_overwritten(straight):
    _, run = straight(strategy="full", epochs=3)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(TransferkitError, match="already holds a run"):
        fit(config(run.parent, strategy="freeze", epochs=1), log=quiet)
    assert (run / "last.pt").read_bytes() == before


def test_strict_data_lists_bad_files(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=5)
    (data / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n")
    summary = fit(config(tmp_path, "lenient", data=str(data), strategy="freeze", epochs=1), log=quiet)
    assert [s["name"].rsplit("/", 1)[-1] for s in summary["skipped_images"]] == ["broken.png"]
    with pytest.raises(TransferkitError, match="1 unusable files.*broken.png"):
        fit(
            config(tmp_path, "strict", data=str(data), strategy="freeze", epochs=1, strict_data=True),
            log=quiet,
        )
    assert not (tmp_path / "strict" / "last.pt").exists()


def test_frozen_prefix_of_head_strategy_is_cached(tmp_path):
    logs = []
    common = dict(model="tests.helpers:SmallNet", strategy="head", freeze=["features.0", "features.1"], epochs=2)
    cached = fit(config(tmp_path, "a", **common), log=logs.append)
    plain = fit(config(tmp_path, "b", **common, cache=False), log=quiet)
    assert any(m.startswith("cache: 'features.2' output (32, 16, 16)") for m in logs), logs
    assert all(e["cached"] for e in cached["epochs"])
    a, b = state(tmp_path / "a"), state(tmp_path / "b")
    assert torch.equal(a["features.0.weight"], b["features.0.weight"])
    # fp16 activations and a training BatchNorm after the boundary: close, not bitwise (measured: 2.7%
    # of the largest weight after two epochs, on a few of 2,560)
    torch.testing.assert_close(a["fc.weight"], b["fc.weight"], atol=4e-2 * b["fc.weight"].abs().max().item(), rtol=0)
    assert abs(cached["best_val_acc"] - plain["best_val_acc"]) <= 0.01


def test_augmented_views_are_cached_when_asked(tmp_path):
    logs = []
    summary = fit(
        config(tmp_path, strategy="freeze", epochs=3, augment="light", cache_views=2, lr=0.03), log=logs.append
    )
    assert all(e["cached"] for e in summary["epochs"])
    assert any("2 augmented views of the training set" in m for m in logs), logs
    plain = fit(config(tmp_path, "b", strategy="freeze", epochs=1, augment="light"), log=quiet)
    assert not plain["epochs"][0]["cached"]  # random augmentation without views: recomputed


def test_grayscale_training_with_one_input_channel(tmp_path):
    summary = fit(config(tmp_path, model="tests.helpers:SmallNet", strategy="scratch", in_chans=1, lr=0.01), log=quiet)
    run = load_run(tmp_path / "run")
    assert run["model"]["features.0.weight"].shape[1] == 1 and run["preprocessing"]["input_size"][0] == 1
    assert summary["best_val_acc"] > 0.5


def test_inference_batches_larger_than_the_data_are_not_measured(tmp_path, monkeypatch):
    import transferkit.train.engine as engine

    asked = []
    real = engine.choose_fast_path

    def recording(*args, **kwargs):
        asked.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "choose_fast_path", recording)
    data = make_image_folder(tmp_path / "data", per_class=20)  # 32 train, 8 val images
    fit(config(tmp_path, data=str(data), epochs=1, precision="auto", channels_last=None), log=quiet)
    inference = next(k for k in asked if k.get("train") is False)
    assert inference["max_batch_size"] == 32
    assert load_run(tmp_path / "run")["fast_path_inference"]["batch_size"] in (16, 32)


@pytest.mark.parametrize("strategy", ["full", "freeze"])  # lp-ft's phases would split otherwise: refused
def test_an_extended_run_continues_its_learning_rate_on_the_longer_schedule(tmp_path, strategy):
    """Resuming with more epochs stretches the last phase's schedule from where it stood: each epoch after the
    resume has the lr a run given the longer total from the start has there (the first used the shorter
    schedule's last rate, 0, and then started over)."""
    import csv

    from tests.helpers import tiny_config

    data = make_image_folder(tmp_path / "data", per_class=12, size=16)
    fit(tiny_config(data, tmp_path / "short", epochs=3, strategy=strategy), log=lambda m: None)
    lines = []
    fit(resume=tmp_path / "short", changes={"epochs": 6}, trust_code=True, log=lines.append)
    fit(tiny_config(data, tmp_path / "long", epochs=6, strategy=strategy), log=lambda m: None)

    def rates(run):
        return [float(row["lr"]) for row in csv.DictReader((run / "metrics.csv").open())]

    extended, long = rates(tmp_path / "short"), rates(tmp_path / "long")
    assert len(extended) == 6 and extended[3:] == pytest.approx(long[3:])
    assert all(rate > 0 for rate in extended[:-1])  # never the shorter schedule's 0, never a restart
    assert "extended from 3 to 6 epochs: the last phase's learning-rate schedule runs over" in " ".join(lines)


def test_a_resume_removes_the_report_of_the_run_as_it_was_and_names_exports_of_an_older_best(tmp_path):
    from tests.helpers import tiny_config
    from transferkit.deploy.export import export_run
    from transferkit.train.folder import run_notes

    data = make_image_folder(tmp_path / "data", per_class=12, size=16)
    run = tmp_path / "run"
    fit(tiny_config(data, run, epochs=2), log=lambda m: None)
    evaluate_run(run, report=True, trust_code=True)
    export_run(run, format="safetensors", trust_code=True, log=lambda m: None)
    assert (run / "report.html").is_file() and (run / "curves.png").is_file()
    lines = []
    fit(resume=run, changes={"epochs": 3}, trust_code=True, log=lines.append)
    text = " ".join(lines)
    assert not (run / "report.html").exists() and not (run / "curves.png").exists()
    assert "removed report.html, curves.png" in text and "written before this resume" in text
    assert f"transferkit eval {run} writes them again" in text
    # the export is named exactly when best.pt moved on
    assert ("model.safetensors is of best.pt before this resume" in text) == (load_run(run)["best_epoch"] == 3)
    noted = []
    run_notes.note_old_exports(run, 2, {"epoch": 3}, noted.append)
    assert noted == [
        "warning: model.safetensors is of best.pt before this resume (epoch 2); best.pt is now epoch 3's: export again"
    ]
    run_notes.note_old_exports(run, 3, {"epoch": 3}, noted.append)
    assert len(noted) == 1  # the same best: the export is still of it
