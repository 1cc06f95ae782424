"""Multi-process training under ``torchrun``: process group set-up, sharding and reductions."""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset, WeightedRandomSampler, default_collate

from ...data.decode import loader_workers
from ...data.items import Streamed
from ...errors import RunError, TransferkitError

__all__ = [
    "DistContext",
    "epoch_steps",
    "group_backend",
    "init_from_env",
    "is_main_process",
    "lost_peer",
    "make_loader",
    "shared_pass",
    "spill_folder",
]


@dataclass
class DistContext:
    """Where this process stands: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place); unchanged when not distributed."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) in ``module`` on every rank.

        DDP broadcasts them at the start of each training forward, after which each rank updates
        them with its own batch: without this, each rank would validate its shard with statistics
        slightly unlike those of the checkpoint rank 0 saves.
        """
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def gather_sharded(self, values: torch.Tensor) -> torch.Tensor:
        """Every rank's ``values`` (CPU, one row per example of an evaluation shard of :func:`make_loader`) in
        the dataset's order on every rank; unchanged when not distributed.

        Shard ``r`` holds examples ``r, r + W, r + 2W, ...``: row ``j`` of rank ``r`` is example ``r + W * j``.
        """
        if not self.enabled:
            return values
        parts = [None] * self.world_size
        dist.all_gather_object(parts, values)
        total = sum(len(p) for p in parts)
        merged = torch.empty((total, *values.shape[1:]), dtype=values.dtype)
        for rank, part in enumerate(parts):
            merged[rank :: self.world_size] = part
        return merged

    def all_gather_rows(self, rows: torch.Tensor | None, counts: list[int], row: tuple) -> list[torch.Tensor]:
        """Every rank's ``rows`` on every rank, on the CPU, in rank order: rank ``r`` holds ``counts[r]`` rows
        (None for none), each of ``row`` = (shape, dtype).
        """
        shape, dtype = row
        device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        padded = torch.zeros((max(counts), *shape), dtype=dtype, device=device)
        if rows is not None:
            padded[: len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return [part[:count].cpu() for part, count in zip(parts, counts) if count]

    def everyone(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank."""
        if not self.enabled:
            return flag
        flags = [None] * self.world_size
        dist.all_gather_object(flags, bool(flag))
        return all(flags)

    def lockstep(self, loader: DataLoader) -> Iterator:
        """``loader``'s batches, then empty ones until this rank has had as many as the rank with the most.

        For a model whose forward is collective (sharded parameters are gathered from every rank):
        evaluation shards differ by an image, which can make one more batch on some ranks.
        """
        most = torch.tensor([len(loader)])
        if self.enabled:
            dist.all_reduce(most, op=dist.ReduceOp.MAX)
        empty = None
        for batch in loader:
            empty = [part[:0] for part in batch]
            yield batch
        if empty is None and int(most) > 0:  # a shard without images: its empty batch is shaped like an image's
            dataset = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
            empty = [part[:0] for part in default_collate([dataset[0]])]
        for _ in range(int(most) - len(loader)):
            yield empty

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def from_main(self, value):
        """Rank 0's ``value`` on every rank: choices measured per process (kernels) must agree."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_reads(self, read: Callable[[], object]):
        """``read()`` run on rank 0 and its result (tensors, numbers, strings and containers of them) sent to
        every rank; its :class:`TransferkitError` is raised on every rank, so that no rank waits for a
        value that never comes.
        """
        if not self.enabled:
            return read()
        if self.is_main:
            try:
                value = read()
            except TransferkitError as e:
                self.from_main(("error", str(e)))
                raise
            buffer = io.BytesIO()
            torch.save(value, buffer)
            payload = torch.frombuffer(bytearray(buffer.getbuffer()), dtype=torch.uint8)
            self.from_main(("bytes", len(payload)))
        else:
            kind, value = self.from_main(None)
            if kind == "error":
                raise RunError(f"rank 0: {value}")
            payload = torch.empty(value, dtype=torch.uint8)
        # As a tensor, not a pickled object: the receivers load it with torch's weights-only unpickler.
        dist.broadcast(payload, src=0)
        if self.is_main:
            return value
        return torch.load(io.BytesIO(payload.numpy().tobytes()), weights_only=True)


def init_from_env() -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment.

    The group is joined first, before anything that can fail on one node only (a run folder or
    DATA that one node lacks), so that such a failure ends every process instead of leaving the
    others waiting to meet it. CPU tensors travel by gloo, CUDA tensors by nccl.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=group_backend())
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


# How gloo, nccl and the rendezvous store say that another process of the job is gone.
_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted")


def lost_peer(error: BaseException) -> str | None:
    """What a collective said when another process of the job stopped (a node died), or None for other errors."""
    text = str(error)
    if isinstance(error, dist.DistError) or any(words in text for words in _PEER_LOST):
        said = next((words for words in _PEER_LOST if words in text), type(error).__name__)
        return said if dist.is_initialized() else None
    return None


def group_backend() -> str:
    """The backends of the process group: gloo for CPU tensors, and nccl for CUDA ones where there is CUDA."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def spill_folder(folder: Path) -> Path:
    """Where this process maps what does not fit in memory, in files removed at once: ``folder`` on rank 0,
    the system's temporary folder ($TMPDIR) on the others, so that another node's --out stays uncreated.
    """
    return folder if is_main_process() else Path(tempfile.gettempdir())


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one): the one that prints and writes."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def epoch_steps(count: int, batch_size: int, world_size: int) -> tuple[int, bool]:
    """(steps per epoch on each rank, whether the last short batch is dropped) for ``count`` training images: it
    is dropped where each rank has more than a batch."""
    per_rank = count // world_size
    drop_last = per_rank > batch_size
    return (per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)) or 1, drop_last


def make_loader(
    dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    dist_ctx: DistContext,
    drop_last: bool,
    sample_weights: torch.Tensor | None = None,
):
    """Batches of ``dataset``: shuffled by ``seed`` for training, sharded across ranks when distributed.

    With ``sample_weights`` (one per example) an epoch draws ``len(dataset)`` examples with
    replacement in proportion to them, by ``seed``.
    """
    workers = loader_workers(dataset)  # streamed images are decoded by worker processes
    images = getattr(getattr(dataset, "decoded", None), "images", None)
    if isinstance(images, Streamed) and shuffle:  # as many steps on every rank as the schedule counts
        batches, _ = epoch_steps(len(dataset), batch_size, dist_ctx.world_size)
        return images.epoch_loader(
            dataset.transform, batches=batches, batch_size=batch_size, seed=seed, workers=workers
        )
    if dist_ctx.enabled and shuffle:
        sampler = DistributedSampler(
            dataset, num_replicas=dist_ctx.world_size, rank=dist_ctx.rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers)
    if dist_ctx.enabled:
        # Evaluation shards without padding, so that reduced counts are exact.
        dataset = Subset(dataset, range(dist_ctx.rank, len(dataset), dist_ctx.world_size))
    generator = torch.Generator().manual_seed(seed)
    if sample_weights is not None and shuffle:
        sampler = WeightedRandomSampler(sample_weights, len(dataset), replacement=True, generator=generator)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last, num_workers=workers
    )


def shared_pass(
    count: int, batch_size: int, dist_ctx: DistContext, run: Callable[[list[int]], Iterator[torch.Tensor]]
) -> Iterator[torch.Tensor]:
    """The outputs of every batch of ``count`` examples in order, each rank computing every ``W``-th batch.

    ``run(indices)`` yields one output tensor (CPU, a row per example) per ``batch_size`` of
    ``indices``: rank ``r`` runs batches ``r, r + W, ...`` and the ``W`` batches of each round are
    gathered on every rank. The outputs equal a single process's when each example's output does
    not depend on its batch (augmentation seeded per example).
    """
    world, batches = dist_ctx.world_size, math.ceil(count / batch_size)
    rows = lambda b: range(b * batch_size, min(count, (b + 1) * batch_size))  # noqa: E731
    own = run([i for b in range(dist_ctx.rank, batches, world) for i in rows(b)])
    row = None
    for first in range(0, batches, world):
        counts = [len(rows(b)) if b < batches else 0 for b in range(first, first + world)]
        part = next(own) if counts[dist_ctx.rank] else None
        if row is None:  # rank 0 has the first batch of every round
            row = dist_ctx.from_main(None if part is None else (tuple(part.shape[1:]), part.dtype))
        yield from dist_ctx.all_gather_rows(part, counts, row)
