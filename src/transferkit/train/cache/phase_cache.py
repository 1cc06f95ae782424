"""The frozen prefix's activations for a phase: found, checked, computed once (or reused), and fed to the tail.

The mechanism (boundary, truncation, storage) is :mod:`transferkit.train.cache.feature_cache`; this
module decides for one phase whether and what to cache, and logs why when it does not.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ...data.decode import loader_workers
from ...data.preprocess import BatchPrep
from ...progress import progress as shown
from ...runtime.fastpath import FastPath, autocast
from ...runtime.kernel_trial import InferenceTrial
from ..config import TrainConfig
from ..parallel.distributed import DistContext, shared_pass, spill_folder
from ..setup import PreparedData
from .cuts import choose_cut
from .feature_cache import Boundary, load_or_compute, relative_difference, rename_stored, stored_activations

__all__ = ["CachedPhase", "cache_frozen_prefix"]


@dataclass
class CachedPhase:
    """What a phase trains on when its frozen prefix is cached: the tail after ``boundary``."""

    train_views: list[TensorDataset]  # one per augmented view; epochs cycle through them
    val: TensorDataset
    prep: Callable[[torch.Tensor], torch.Tensor]  # activations to the device, in the prefix's memory format
    boundary: Boundary
    net: nn.Module  # what runs on the activations: the model with its prefix skipped, or the classifier alone
    skipping: Callable[[], AbstractContextManager]  # the block within which ``net`` skips the prefix


def cache_frozen_prefix(
    model: nn.Module,
    config: TrainConfig,
    data: PreparedData,
    infer: FastPath | InferenceTrial,
    device: torch.device,
    *,
    head: str,
    augment: str,
    log: Callable[[str], None],
    dist_ctx: DistContext | None = None,
) -> CachedPhase | None:
    """Cached activations of the frozen prefix for train (one set per view) and val, or None (and why, in the log).

    With random augmentation, ``cache_views`` augmented copies of the training set are computed
    once and the epochs cycle through them. Activations are computed with the inference kernels
    ``infer``, or, while an :class:`~transferkit.runtime.kernel_trial.InferenceTrial` chooses them,
    with its candidates on the first batches (``infer.result()`` is the choice afterwards); ones
    an earlier run of this process computed from the same frozen weights and data
    (``data.activations``) are reused.

    The prefix is found by a dry run (:func:`~transferkit.train.cache.feature_cache.find_boundary`);
    where the network does more than run its modules in sequence there (a ViT's tokens, a
    Swin's windows) and only the classifier trains, timm's own cut at the classifier's input
    serves instead (:mod:`transferkit.train.cache.head_cut`); when blocks train too, the input of the
    first one is cached (:mod:`transferkit.train.cache.entry_cut`).

    Under torchrun each of the ``W`` processes computes every ``W``-th batch and the batches are
    gathered on every rank; each image's augmentation is seeded by its view and index, so the
    activations equal one process's. Only rank 0 keeps a file for later runs.
    """
    dist_ctx = dist_ctx or DistContext()
    trial = infer.timing("the frozen layers' pass") if isinstance(infer, InferenceTrial) else None
    infer_prep = BatchPrep(data.preprocessing, device, trial is None and infer.channels_last)
    sample = data.train.decoded.images[:8]
    chosen = choose_cut(model, head, sample, data.preprocessing.input_size, prep=infer_prep)
    if isinstance(chosen, str):
        log(f"cache: off, {chosen}")
        return None
    amp = (lambda: trial.autocast(device)) if trial is not None else (lambda: autocast(device, infer.precision))
    runner, outputs = chosen.compute(model, sample, prep=infer_prep, autocast=amp)
    key = chosen.key(model, data_fingerprint=data.fingerprint, preprocessing=_computed_with(data, trial or infer))
    started = time.perf_counter()
    passes = _Passes(
        data, Path(config.out) / "cache", chosen.boundary, runner, outputs, infer_prep, infer, dist_ctx, log
    )
    passes.probed = _probed(data, outputs, sample, augment)
    if trial is None:
        runner.to(memory_format=torch.channels_last if infer.channels_last else torch.contiguous_format)
    views = []
    for view in range(config.cache_views if augment != "none" else 1):
        seed = config.seed * 7919 + view if augment != "none" else None  # each view is one draw of the augmentation
        acts, how = passes.stored(data.train, f"{key}-train-{augment}-{config.seed}-{view}", seed)
        views.append(acts)
    data.train.transform = None
    val_acts, _ = passes.stored(data.val, f"{key}-val")
    data.probe_features = None  # used once: memory is not kept for it
    if trial is not None:  # the kernels are chosen now: the activations are kept under their name
        infer = trial.result()
        named = chosen.key(model, data_fingerprint=data.fingerprint, preprocessing=_computed_with(data, infer))
        _rename(data, passes.folder, key, named)
        how = how.replace(key, named)
    model.to(memory_format=torch.channels_last if infer.channels_last else torch.contiguous_format)
    boundary = chosen.boundary
    described = f"{len(views)} augmented views of the training set, " if augment != "none" else ""
    log(
        f"cache: '{boundary.path}' {boundary.kind} {tuple(boundary.output_shape)} for {described}"
        f"{len(views[0]) + len(val_acts)} images computed once in {time.perf_counter() - started:.1f} s ({how}); "
        f"{len(boundary.stubbed)} frozen modules are skipped every epoch"
    )
    net, skipping = chosen.tail(model)
    labels = data.train.decoded.labels
    train_views = [TensorDataset(acts, labels) for acts in views]
    prep = partial(_to_device, device=device, channels_last=val_acts.dim() == 4 and infer.channels_last)
    return CachedPhase(train_views, TensorDataset(val_acts, data.val.decoded.labels), prep, boundary, net, skipping)


def _to_device(acts: torch.Tensor, *, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = acts.to(device, non_blocking=True).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _computed_with(data: PreparedData, infer: FastPath | InferenceTrial) -> dict:
    """The preprocessing and the kernels the activations depend on (several, while a trial chooses)."""
    if isinstance(infer, InferenceTrial):
        return {**asdict(data.preprocessing), "kernels": "timed on this pass"}
    return {**asdict(data.preprocessing), "precision": infer.precision, "channels_last": infer.channels_last}


def _rename(data: PreparedData, folder: Path, key: str, named: str) -> None:
    """Activations kept under ``key`` (computed while a trial chose the kernels) renamed to the chosen kernels'."""
    for name in [n for n in data.activations if n.startswith(key)]:
        renamed = named + name.removeprefix(key)
        kept, kept_how = data.activations.pop(name)
        data.activations[renamed] = (kept, kept_how.replace(name, renamed))
        rename_stored(folder, name, renamed)


@dataclass
class _Passes:
    """The passes of one phase's frozen prefix over a split: computed (each process a share of the batches under
    torchrun), stored in the run folder, reused from an earlier run of this process or from strategy auto's probe."""

    data: PreparedData
    folder: Path
    boundary: Boundary
    runner: nn.Module
    outputs: Callable
    prep: Callable
    infer: FastPath | InferenceTrial
    dist_ctx: DistContext
    log: Callable[[str], None]
    probed: dict[str, torch.Tensor] | None = None

    def compute(self, dataset, seed: int | None, label: str):
        trial = self.infer if isinstance(self.infer, InferenceTrial) else None
        size = trial.max_batch_size if trial is not None else self.infer.inference_batch_size
        workers = loader_workers(dataset)
        drawn = dataset if seed is None else SeededItems(dataset, seed)

        def run(indices: list[int] | None = None):  # a pass may run twice (fp16, then float32): the same draws
            part = drawn if indices is None else Subset(drawn, indices)
            batches = DataLoader(part, batch_size=size, num_workers=workers)
            images = (images for images, _ in shown(batches, label, self.log))
            return self.outputs(images if trial is None else trial.run(images, self.runner, self.prep))

        if self.dist_ctx.enabled:
            return lambda: shared_pass(len(dataset), size, self.dist_ctx, run)
        return run

    def stored(self, dataset, name: str, seed: int | None = None) -> tuple[torch.Tensor, str]:
        data, dist_ctx = self.data, self.dist_ctx
        if name in data.activations:
            acts, how = data.activations[name]
            return acts, f"{how}, reused from an earlier run"
        part = "train" if dataset is data.train else "val"
        label = f"cache: '{self.boundary.path}' for the {'training' if part == 'train' else 'validation'} images"
        probed = self.probed
        produce = self.compute(dataset, seed, label) if probed is None else lambda: iter([probed[part]])
        # Ranks reuse a stored file only when each has it (nodes may not share the run folder).
        found = stored_activations(self.folder, name, len(dataset))
        if dist_ctx.everyone(found is not None):
            acts, how = found
        else:
            scratch = None if dist_ctx.is_main else spill_folder(self.folder)
            acts, how = load_or_compute(
                produce, len(dataset), folder=self.folder, key=name, reuse=False, scratch=scratch
            )
            if probed is None and dist_ctx.enabled:
                how += f", its batches shared by {dist_ctx.world_size} processes"
        if probed is not None:
            how += ", from strategy auto's probe"
        data.activations[name] = (acts, how)
        return acts, how


class SeededItems(Dataset):
    """``dataset`` with each item's random draws (torch, random, numpy) seeded by ``seed`` and its index.

    An augmented view is then the same whatever the batch size, the loader's workers, or which
    process computes which batch.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = (self.seed * 1_000_003 + index) % 2**32
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        return self.dataset[index]


def _probed(data: PreparedData, outputs, sample: torch.Tensor, augment: str) -> dict[str, torch.Tensor] | None:
    """Strategy auto's probe features, when they are the cache's own: same shape, and within 1e-3 on ``sample``."""
    probe = data.probe_features
    if probe is None or augment != "none":
        return None
    if len(probe["train"]) != len(data.train) or len(probe["val"]) != len(data.val):
        return None
    expected = torch.cat(list(outputs(iter([sample]))))
    first = probe["train"][: len(expected)]
    if first.numel() != expected.numel():
        return None
    difference = relative_difference(first.reshape(expected.shape), expected)
    return probe if difference is not None and difference <= 1e-3 else None
