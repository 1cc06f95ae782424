"""Two gloo processes (``mp.spawn`` on 127.0.0.1) against one: the shared frozen layers' pass, and --shard-params.

Both processes run every case in one spawn, since each takes seconds to import torch and timm;
the tests read what rank 0 saved.
"""

import csv
import json
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import transferkit as tk
from tests.helpers import TinyNet, make_image_folder, tiny_config, tiny_vit
from tests.tasks.csvs import multilabel_csv
from transferkit.data.augment import augmentation
from transferkit.data.shards import write_shards
from transferkit.data.sources import open_data
from transferkit.errors import ConfigError
from transferkit.inference.runs import evaluate_run, load_trained
from transferkit.model.freeze import freeze
from transferkit.runtime.fastpath import FastPath
from transferkit.train.cache.phase_cache import cache_frozen_prefix
from transferkit.train.engine import fit
from transferkit.train.parallel.distributed import DistContext, make_loader
from transferkit.train.parallel.sharding import shard_model
from transferkit.train.phases.loop import evaluate, evaluate_outputs
from transferkit.train.setup import prepare_data

BATCH = 5  # the frozen pass: 29 training images, 6 batches, the last one short, so rank 1 has one fewer
STRATEGIES = ("full", "lp-ft", "gradual", "lora")


def cached(folder, out, dist_ctx: DistContext) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """The cached activations (each augmented view, val) of TinyNet frozen through ``layer1``, and the log."""
    torch.manual_seed(0)
    config = tiny_config(folder, out, strategy="freeze", augment="light", cache_views=2, val_fraction=0.25)
    model = TinyNet(num_classes=3)
    freeze(model, ["conv1", "bn1", "layer1"])
    data = prepare_data(config, model=model, log=lambda m: None)
    data.train.transform = augmentation("light", 16)
    logged = []
    phase = cache_frozen_prefix(
        model,
        config,
        data,
        FastPath(False, "fp32", "as asked", batch_size=BATCH),
        torch.device("cpu"),
        head="fc",
        augment="light",
        log=logged.append,
        dist_ctx=dist_ctx,
    )
    return [view.tensors[0] for view in phase.train_views], phase.val.tensors[0], logged


def settings(folder, out, strategy, **changes):
    """A tiny ViT's run, so that the sharding units are transformer blocks."""
    return tiny_config(folder, out, model="tests.helpers:tiny_vit", strategy=strategy, batch_size=4, **changes)


def ragged_validation(ctx: DistContext) -> dict:
    """A sharded model evaluated on shards of 5 and 4 images in batches of 2: 3 batches on rank 0, 2 on rank 1."""
    images, labels = torch.randn(9, 3, 16, 16), torch.tensor([0, 1, 2] * 3)
    loader = make_loader(
        TensorDataset(images, labels), batch_size=2, shuffle=False, seed=0, dist_ctx=ctx, drop_last=False
    )
    torch.manual_seed(0)
    model = tiny_vit(num_classes=3)
    shard_model(model, precision="fp32", device=torch.device("cpu"), world_size=2)
    common = dict(prep=lambda x: x, device=torch.device("cpu"), dist_ctx=ctx)
    scored = evaluate(model, ctx.lockstep(loader), num_classes=3, **common)
    several = evaluate_outputs(model, ctx.lockstep(loader), loss_fn=F.cross_entropy, **common)
    return {"scored": scored, "several": several, "batches": len(loader)}


def _rank(rank: int, port: int, root):
    # Loader workers start as under torchrun on Linux (forked), not as spawn's children would (a fresh interpreter each)
    mp.set_start_method("fork", force=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0")
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))  # a rank left waiting fails the test
    ctx, logged = DistContext(rank, 2, 0), []
    try:
        views, val, cache_log = cached(root / "cache-data", root / "cache", ctx)
        torch.save({"views": views, "val": val, "log": cache_log}, root / f"cache-rank{rank}.pt")
        ragged = ragged_validation(ctx)
        for strategy in STRATEGIES:
            for shard in (False, True):
                fit(
                    settings(root / "data", root / f"{strategy}-{shard}", strategy, shard_params=shard),
                    log=logged.append,
                )
        # Stopped after its first epoch unsharded, and resumed sharded: shard_params may change on resuming.
        fit(settings(root / "data", root / "resumed", "full"), stop_after=1, log=logged.append)
        fit(resume=root / "resumed", changes={"shard_params": True}, trust_code=True, log=logged.append)
        # Streamed shards: each rank draws its own, and every rank runs as many steps.
        fit(tiny_config(f"wds:{root / 'shards'}", root / "streamed", stream=True, epochs=2), log=logged.append)
        # From Python, as under torchrun: the user's module and (images, targets); DDP keeps the replicas equal.
        torch.manual_seed(0)
        images, targets = torch.randn(48, 3, 16, 16), torch.arange(48) % 3
        module = TinyNet(3)
        python = tk.fit(
            module,
            (images, targets),
            strategy="full",
            epochs=2,
            out=root / "python",
            batch_size=8,
            lr=0.05,
            precision="fp32",
            channels_last=False,
            log=logged.append,
        )
        torch.save({"state": module.state_dict(), "epochs": len(python.history)}, root / f"python-rank{rank}.pt")
        # Several labels: freeze trains the head on the cached activations under DDP (it once failed in c10d).
        labels_log = []
        summary = fit(
            tiny_config(
                root / "labels" / "labels.csv",
                root / "labels-run",
                task="multi-label",
                strategy="freeze",
                epochs=4,
                lr=0.01,
                batch_size=16,
            ),
            log=labels_log.append,
        )
        if rank == 0:
            torch.save(
                {"ragged": ragged, "log": logged, "labels": (json.dumps(summary, default=str), labels_log)},
                root / "params.pt",
            )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The folder where both processes saved what they computed."""
    root = tmp_path_factory.mktemp("pair")
    make_image_folder(root / "cache-data", classes=("a", "b", "c"), per_class=13)
    make_image_folder(root / "data", classes=("a", "b", "c"), per_class=14)
    write_shards(open_data(str(root / "data")), root / "shards", shard_size=4000, log=lambda m: None)
    (root / "labels").mkdir()
    multilabel_csv(root / "labels", count=240)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, root), nprocs=2)
    return root


@pytest.mark.slow
def test_two_processes_share_the_pass_and_get_one_process_activations(pair, tmp_path):
    views, val, _ = cached(pair / "cache-data", tmp_path / "one", DistContext())
    assert len(views) == 2 and len(views[0]) == 29 and len(val) == 10
    assert not torch.equal(views[0], views[1])  # two draws of the augmentation
    for rank in (0, 1):
        shared = torch.load(pair / f"cache-rank{rank}.pt")
        assert all(torch.equal(a, b) for a, b in zip(shared["views"], views, strict=True))
        assert torch.equal(shared["val"], val)
        assert "its batches shared by 2 processes" in shared["log"][0]


def _rows(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sharded_runs_train_as_ddp_and_save_an_unsharded_runs_checkpoints(pair):
    logged = torch.load(pair / "params.pt")["log"]
    assert (
        "parameters sharded across 2 processes (FSDP) in 4 units (blocks.0, blocks.1, norm, head) and the root, fp32"
        in logged
    )
    for strategy in STRATEGIES:
        ddp, fsdp = pair / f"{strategy}-False", pair / f"{strategy}-True"
        for a, b in zip(_rows(ddp), _rows(fsdp), strict=True):
            for key in ("train_loss", "val_loss", "val_acc"):
                assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5), (strategy, a["epoch"], key)
        plain, sharded = torch.load(ddp / "last.pt"), torch.load(fsdp / "last.pt")
        assert plain["model"].keys() == sharded["model"].keys()
        for name, tensor in plain["model"].items():
            assert type(sharded["model"][name]) is torch.Tensor
            assert torch.allclose(tensor, sharded["model"][name], atol=1e-5), (strategy, name)
        assert plain["optimizer"]["param_groups"] == sharded["optimizer"]["param_groups"]
        for index, moments in plain["optimizer"]["state"].items():
            assert torch.allclose(moments["exp_avg"], sharded["optimizer"]["state"][index]["exp_avg"], atol=1e-5)
        # What predict and eval read: the model whole, in one process.
        assert load_trained(fsdp, device="cpu", trust_code=True).class_names == ["a", "b", "c"]
    straight, resumed = torch.load(pair / "full-True" / "last.pt"), torch.load(pair / "resumed" / "last.pt")
    assert [float(r["train_loss"]) for r in _rows(pair / "resumed")] == pytest.approx(
        [r["train_loss"] for r in straight["history"]], abs=1e-5
    )
    for name, tensor in straight["model"].items():
        assert torch.allclose(tensor, resumed["model"][name], atol=1e-5), name


@pytest.mark.slow
def test_a_sharded_model_validates_shards_of_unequal_batch_counts(pair):
    ragged = torch.load(pair / "params.pt")["ragged"]
    several = ragged["several"]
    assert ragged["batches"] == 3 and ragged["scored"]["count"] == 9 and several["count"] == 9
    picked = several["logits"].log_softmax(-1).gather(1, several["targets"][:, None])
    assert several["loss"] == pytest.approx(-picked.mean().item(), rel=1e-5)  # the empty batch added no loss


def test_one_process_says_it_has_nothing_to_shard_with(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=6)
    logged = []
    fit(settings(folder, tmp_path / "run", "full", epochs=1, shard_params=True), log=logged.append)
    assert any("one process, nothing to shard with" in line for line in logged)


def test_fp16_is_refused_with_sharded_parameters(tmp_path):
    with pytest.raises(ConfigError, match="fp16 with shard_params"):
        settings(tmp_path, tmp_path / "run", "full", shard_params=True, precision="fp16")


@pytest.mark.slow
def test_two_processes_stream_shards_in_steps_of_the_same_count(pair):
    logged = torch.load(pair / "params.pt")["log"]
    assert any("train images streamed from" in line for line in logged)
    assert [row["epoch"] for row in _rows(pair / "streamed")] == ["1", "2"]


@pytest.mark.slow
def test_two_processes_train_several_labels_and_validate_every_held_out_image(pair):
    summary, logged = torch.load(pair / "params.pt")["labels"]
    summary = json.loads(summary)
    assert summary["best_score"]["name"] == "val_map" and len(summary["epochs"]) == 4
    assert sum(line.startswith("cache: ") for line in logged) == 1  # logged by rank 0 alone
    assert "its batches shared by 2 processes" in " ".join(" ".join(logged).split())  # each rank computed half
    # the validation gathered both ranks' shards: evaluating best.pt on the 48 held-out images gives its score
    # (to rounding: batches of another size can swap two near-equal probabilities in a label's ranking)
    evaluated = evaluate_run(pair / "labels-run", trust_code=True, device="cpu")
    assert evaluated["images"] == 48 and evaluated["map"] == pytest.approx(summary["best_score"]["value"], abs=1e-3)
    assert json.loads((pair / "labels-run" / "calibration.json").read_text())["images"] == 48


@pytest.mark.slow
def test_fit_from_python_on_a_module_and_tensors_trains_under_two_processes(pair):
    ranks = [torch.load(pair / f"python-rank{rank}.pt") for rank in (0, 1)]
    assert [r["epochs"] for r in ranks] == [2, 2]
    for name, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][name]), name  # both replicas hold best.pt's weights
    best = torch.load(pair / "python" / "best.pt", weights_only=False)
    assert all(torch.equal(best["model"][k], v) for k, v in ranks[0]["state"].items())
    assert json.loads((pair / "python" / "report.json").read_text())["model"] == "object:tests.helpers.TinyNet"
