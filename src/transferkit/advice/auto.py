"""``--strategy auto``: the run asks :func:`~transferkit.advice.advise.advise` which strategy to train.

The probe runs on the run's own model and decoded data (nothing is built or decoded twice), on a
stratified sample of :data:`~transferkit.advice.advise.SAMPLE` training images when there are
more, and leaves the model as it found it. When it advises ``freeze`` and probed every image, its
features at the head's input become the cache of the frozen network, after a check on real
images that they are what the cache would compute. The advice (strategy, reason, the probes behind it)
goes into the run folder (``advice.json``, ``probe_depth.png``), the report and the model card;
``config.json`` holds the strategy that was trained, so that resuming continues it.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from ..data.decode import ImageDataset
from ..data.sources import stratified_indices
from ..errors import ConfigError
from ..train import engine
from ..train.config import TrainConfig
from ..train.setup import PreparedData
from .advise import SAMPLE, advise_prepared

__all__ = ["choose_strategy", "fit"]


def fit(config: TrainConfig | None = None, **settings) -> dict:
    """:func:`transferkit.train.engine.fit` (same arguments), with ``strategy="auto"`` replaced by the strategy
    :func:`choose_strategy` advises: how the CLI's ``train``, ``compare`` and ``tk.fit`` train a run."""
    return engine.fit(config, choose_strategy=choose_strategy, **settings)


def choose_strategy(
    config: TrainConfig, model: nn.Module, data: PreparedData, *, write: bool = True, log=print
) -> tuple[TrainConfig, dict]:
    """The configuration with the advised strategy (and its settings) in place of ``auto``, and the advice.

    Every process of a distributed run probes the same images and reaches the same advice;
    ``write`` is for the one that writes the run folder.
    """
    probed = _probed(data, SAMPLE, config.seed, log)
    result = advise_prepared(
        config, model, probed, write=write, estimate=False, keep_features=True, train_images=len(data.train), log=log
    )
    features = result.pop("head_features")
    advice = result["advice"]
    changes = {"strategy": advice["strategy"]}
    if "unfreeze_last" in advice:
        changes["unfreeze_last"] = advice["unfreeze_last"]
    try:
        chosen = dataclasses.replace(config, **changes)
    except ConfigError:  # lp-ft's two phases in a one-epoch run: fine-tune everything instead
        chosen = dataclasses.replace(config, strategy="full")
        advice = {
            **advice,
            "strategy": "full",
            "command": "--strategy full",
            "reason": advice["reason"] + f"; {advice['strategy']} needs more epochs than {config.epochs}, so full",
        }
        log(f"advice: {advice['command']}: {advice['reason']}")
    log(
        f"strategy auto: training {advice['command']} as advised in {result['seconds']:.1f} s "
        "(advice.json, probe_depth.png); --strategy chooses one yourself"
    )
    summary = {
        "strategy": advice["strategy"],
        "command": advice["command"],
        "reason": advice["reason"],
        "signals": advice.get("signals", []),
        "seconds": result["seconds"],
        "score": result["score"],
        "depths": [{k: d[k] for k in ("name", "score", "gap")} for d in result["depths"]],
    }
    if chosen.strategy == "freeze" and probed is data:
        # The probe ran every image through the frozen network: the cache may take its last
        # features instead of computing them again, once it has checked they are the same.
        data.probe_features = features
    return chosen, summary


def _probed(data: PreparedData, limit: int, seed: int, log) -> PreparedData:
    """``data`` with at most ``limit`` training images, a stratified sample, for the probe."""
    labels = data.train.decoded.labels
    if len(labels) <= limit or not isinstance(data.train.decoded.images, torch.Tensor):
        return data  # streamed images are probed whole: they are not held to be indexed
    index = torch.tensor(sorted(stratified_indices(labels.tolist(), limit, seed=seed)))
    decoded = data.train.decoded
    sample = dataclasses.replace(
        decoded, images=decoded.images[index], labels=labels[index], names=[decoded.names[i] for i in index.tolist()]
    )
    log(f"probing a stratified sample of {len(index)} of {len(labels)} training images")
    return dataclasses.replace(data, train=ImageDataset(sample))
