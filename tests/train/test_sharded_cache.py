"""The frozen layers' pass shared by two gloo processes gives exactly one process's activations."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import TinyNet, make_image_folder, tiny_config
from transferkit.data.augment import augmentation
from transferkit.model.freeze import freeze
from transferkit.train.distributed import DistContext
from transferkit.train.fastpath import FastPath
from transferkit.train.phase_cache import cache_frozen_prefix
from transferkit.train.setup import prepare_data

BATCH = 5  # 29 training images: 6 batches, the last one short, so rank 1 has one fewer


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


def _rank(rank: int, port: int, folder, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        views, val, logged = cached(folder, out, DistContext(rank, 2, 0))
        torch.save({"views": views, "val": val, "log": logged}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_share_the_pass_and_get_one_process_activations(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=13)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_rank, args=(port, folder, out), nprocs=2)
    views, val, _ = cached(folder, tmp_path / "one", DistContext())
    assert len(views) == 2 and len(views[0]) == 29 and len(val) == 10
    assert not torch.equal(views[0], views[1])  # two draws of the augmentation
    for rank in (0, 1):
        shared = torch.load(out / f"rank{rank}.pt")
        assert all(torch.equal(a, b) for a, b in zip(shared["views"], views, strict=True))
        assert torch.equal(shared["val"], val)
        assert "its batches shared by 2 processes" in shared["log"][0]
