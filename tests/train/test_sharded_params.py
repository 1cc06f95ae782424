"""--shard-params: FSDP over two gloo processes trains as DDP does, and its checkpoints are an unsharded run's."""

import csv
import socket
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from tests.helpers import make_image_folder, tiny_config, tiny_vit
from transferkit.errors import ConfigError
from transferkit.inference.runs import load_trained
from transferkit.train.distributed import DistContext, make_loader
from transferkit.train.engine import fit
from transferkit.train.loop import evaluate, evaluate_outputs
from transferkit.train.sharding import shard_model

STRATEGIES = ("full", "lp-ft", "gradual", "lora")


def settings(folder, out, strategy, **changes):
    return tiny_config(folder, out, model="tests.helpers:tiny_vit", strategy=strategy, batch_size=4, **changes)


def _rank(rank: int, port: int, folder, root):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0")
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=120))  # a rank left waiting fails the test
    try:
        ragged_validation(rank, root)
        for strategy in STRATEGIES:
            for shard in (False, True):
                fit(settings(folder, root / f"{strategy}-{shard}", strategy, shard_params=shard), log=print)
        # Stopped after its first epoch unsharded, and resumed sharded: shard_params may change on resuming.
        fit(settings(folder, root / "resumed", "full"), stop_after=1, log=print)
        fit(resume=root / "resumed", changes={"shard_params": True}, trust_code=True, log=print)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def ragged_validation(rank: int, root) -> None:
    """A sharded model evaluated on shards of 5 and 4 images in batches of 2: 3 batches on rank 0, 2 on rank 1."""
    ctx = DistContext(rank, 2, 0)
    images = torch.randn(9, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    loader = make_loader(
        TensorDataset(images, labels), batch_size=2, shuffle=False, seed=0, dist_ctx=ctx, drop_last=False
    )
    torch.manual_seed(0)
    model = tiny_vit(num_classes=3)
    shard_model(model, precision="fp32", device=torch.device("cpu"), world_size=2)
    common = dict(prep=lambda x: x, device=torch.device("cpu"), dist_ctx=ctx)
    scored = evaluate(model, ctx.lockstep(loader), num_classes=3, **common)
    several = evaluate_outputs(
        model, ctx.lockstep(loader), loss_fn=lambda out, y: F.cross_entropy(out, y, reduction="mean"), **common
    )
    if rank == 0:
        torch.save({"scored": scored, "several": several, "len": len(loader)}, root / "ragged.pt")


def _rows(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sharded_runs_train_as_ddp_and_save_an_unsharded_runs_checkpoints(tmp_path, capfd):
    folder = make_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=14)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, folder, tmp_path), nprocs=2)
    logged = capfd.readouterr().out
    ragged = torch.load(tmp_path / "ragged.pt")
    assert ragged["len"] == 3 and ragged["scored"]["count"] == 9 and ragged["several"]["count"] == 9
    whole = torch.stack(
        [ragged["several"]["logits"].log_softmax(-1)[i, t] for i, t in enumerate(ragged["several"]["targets"])]
    )
    assert ragged["several"]["loss"] == pytest.approx(-whole.mean().item(), rel=1e-5)
    assert "parameters sharded across 2 processes (FSDP) in 4 units (blocks.0, blocks.1, norm, head)" in logged
    for strategy in STRATEGIES:
        ddp, fsdp = tmp_path / f"{strategy}-False", tmp_path / f"{strategy}-True"
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
    straight, resumed = torch.load(tmp_path / "full-True" / "last.pt"), torch.load(tmp_path / "resumed" / "last.pt")
    assert [float(r["train_loss"]) for r in _rows(tmp_path / "resumed")] == pytest.approx(
        [r["train_loss"] for r in straight["history"]], abs=1e-5
    )
    for name, tensor in straight["model"].items():
        assert torch.allclose(tensor, resumed["model"][name], atol=1e-5), name


def test_one_process_says_it_has_nothing_to_shard_with(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=("a", "b"), per_class=6)
    logged = []
    fit(settings(folder, tmp_path / "run", "full", epochs=1, shard_params=True), log=logged.append)
    assert any("one process, nothing to shard with" in line for line in logged)


def test_fp16_is_refused_with_sharded_parameters(tmp_path):
    with pytest.raises(ConfigError, match="fp16 with shard_params"):
        settings(tmp_path, tmp_path / "run", "full", shard_params=True, precision="fp16")
