"""``--strategy auto``: the run asks :func:`~transferkit.advice.advise.advise` which strategy to train.

The probe runs on the run's own model and decoded data (nothing is built or decoded twice), on a
stratified sample of :data:`~transferkit.advice.advise.SAMPLE` training images when there are
more, and leaves the model as it found it. When it advises ``freeze`` and probed every image, its
features at the head's input become the cache of the frozen network, after a check on real
images that they are what the cache would compute. When it advises ``head --unfreeze-last N``, a one-epoch race
against retraining from the depth before decides which goes on (:mod:`~transferkit.advice.race`). With a
budget (``--budget``), the probe's seconds count and the advice trains less where it would not fit
(:mod:`~transferkit.advice.budget`). The advice (strategy, reason, the probes and the race behind it)
goes into the run folder (``advice.json``, ``probe_depth.png``), the report and the model card;
``config.json`` holds the strategy that was trained, so that resuming continues it.
"""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn as nn

from ..data.decode import ImageDataset
from ..data.sources import stratified_indices
from ..errors import ConfigError
from ..train import engine
from ..train.config import TrainConfig
from ..train.setup import PreparedData
from .advise import SAMPLE, advise_prepared
from .race import race
from .rule import expected_cost

__all__ = ["choose_strategy", "fit"]


def fit(config: TrainConfig | None = None, **settings) -> dict:
    """:func:`transferkit.train.engine.fit` (same arguments), with ``strategy="auto"`` replaced by the strategy
    :func:`choose_strategy` advises: how the CLI's ``train``, ``compare`` and ``tk.fit`` train a run."""
    return engine.fit(config, choose_strategy=choose_strategy, **settings)


def choose_strategy(
    config: TrainConfig, model: nn.Module, data: PreparedData, *, write: bool = True, log=print
) -> tuple[TrainConfig, dict, dict | None]:
    """The configuration with the advised strategy (and its settings) in place of ``auto``, the advice, and the
    checkpoint state to go on from where a race decided (:func:`~transferkit.advice.race.race`), else None.

    Every process of a distributed run probes the same images and reaches the same advice;
    ``write`` is for the one that writes the run folder.
    """
    started = time.perf_counter()
    probed = _probed(data, SAMPLE, config.seed, log)
    result = advise_prepared(
        config,
        model,
        probed,
        budget=config.budget,
        started=started,
        probe_in_budget=True,
        write=write,
        estimate=False,
        keep_features=True,
        train_images=len(data.train),
        log=log,
    )
    features = result.pop("head_features")
    advice = _trainable(config, result["advice"], log)
    advice, raced = race(config, model, data, advice, result["depths"], log=log)
    chosen = _chosen(config, advice)
    log(
        f"strategy auto: training {advice['command']} as advised in {time.perf_counter() - started:.1f} s "
        "(advice.json, probe_depth.png); --strategy chooses one yourself"
    )
    if cost := expected_cost(advice["strategy"]):
        log(f"strategy auto: {cost}")
    summary = {
        "strategy": advice["strategy"],
        "command": advice["command"],
        "reason": advice["reason"],
        "signals": advice.get("signals", []),
        "seconds": result["seconds"],
        "score": result["score"],
        "depths": [{k: d[k] for k in ("name", "score", "gap")} for d in result["depths"]],
        "considered": result["considered"],
        "race": advice.get("race"),
        "budget": config.budget,
        "expected_cost": cost,
    }
    if chosen.strategy == "freeze" and probed is data:
        # The probe ran every image through the frozen network: the cache may take its last
        # features instead of computing them again, once it has checked they are the same.
        data.probe_features = features
    return chosen, summary, raced


def _chosen(config: TrainConfig, advice: dict) -> TrainConfig:
    """``config`` training what ``advice`` names; its budget spent on the choice (a resumed run makes none)."""
    changes = {"strategy": advice["strategy"], "budget": None}
    if "unfreeze_last" in advice:
        changes["unfreeze_last"] = advice["unfreeze_last"]
    return dataclasses.replace(config, **changes)  # validated: ConfigError where it cannot train


def _trainable(config: TrainConfig, advice: dict, log) -> dict:
    """``advice``, or ``full`` where its strategy cannot train in ``config.epochs`` (lp-ft's two phases in one)."""
    try:
        _chosen(config, advice)
        return advice
    except ConfigError:
        advice = {
            **{k: v for k, v in advice.items() if k != "unfreeze_last"},
            "strategy": "full",
            "command": "--strategy full",
            "reason": advice["reason"] + f"; {advice['strategy']} needs more epochs than {config.epochs}, so full",
        }
        log(f"advice: {advice['command']}: {advice['reason']}")
        return advice


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
