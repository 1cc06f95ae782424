"""The learning-rate range test: train a copy of the model while the rate grows exponentially.

The loss is recorded at each step (smoothed as fastai and Leslie Smith's test do) until it
diverges. The suggested rate is where the smoothed loss falls fastest, before its minimum.
It runs the first phase of the strategy: with a frozen prefix, on its cached output, which
takes seconds. Nothing is saved but the plot. The loss is the task's training loss: cross-entropy
for classes, binary cross-entropy for several labels per image, MSE or Huber on standardised
targets for numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from ..data.preprocess import BatchPrep
from ..data.sources import open_data
from ..errors import ConfigError
from ..model.surgery import find_head
from ..progress import progress as shown
from ..runtime.fastpath import FastPath, autocast, resolve_device
from ..serialization import write_bytes
from ..tasks.objective import loss_function, positive_weights
from .cache.phase_cache import cache_frozen_prefix
from .config import TrainConfig
from .parallel.distributed import DistContext, make_loader
from .phases.phase import apply_configured_phase, phase_optimizer
from .rng import seed_everything
from .setup import PreparedData, build_model, choose_weights, prepare_data

__all__ = ["find_lr", "suggest_lr"]


def find_lr(
    config: TrainConfig,
    *,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    log: Callable[[str], None] = print,
    data: PreparedData | None = None,
) -> dict:
    """Rates, smoothed losses, the suggested rate and the plot (``lr_find.png`` in ``config.out``).

    ``data`` is DATA already prepared for this config (as ``fit`` has it); else it is decoded here.

    Examples:
        >>> find_lr(TrainConfig(model="resnet18", weights="timm", data="photos/", out="runs/lr"))["suggestion"]
        0.0023...
    """
    if not 0 < start < end or not math.isfinite(end):
        raise ConfigError(f"The range must satisfy 0 < start < end, got {start:g} and {end:g}.", argument="start")
    if steps < 10:
        raise ConfigError(f"steps must be at least 10, got {steps}.", argument="steps")
    config = choose_weights(config)[0]
    device = resolve_device(config.device)
    source = open_data(config.data, config.label_spec(), config.hf_options()) if data is None else None
    seed_everything(config.seed)
    model, _ = build_model(config, len((data or source).class_names), load_weights=True)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = prepare_data(config, source=source, model=model, log=log)
    model = model.to(device)
    phase = config.phases()[0]
    apply_configured_phase(model, config, phase, find_head(model))
    plain = FastPath(False, config.pinned_precision or "fp32", "lr-find")
    cached = None
    if config.cache:
        cached = cache_frozen_prefix(model, config, data, plain, device, head=find_head(model), augment="none", log=log)
    net = model
    if cached is not None:
        dataset, prep, skipping, net = cached.train_views[0], cached.prep, cached.skipping, cached.net
    else:
        dataset, prep, skipping = data.train, BatchPrep(data.preprocessing, device, False), nullcontext
    optimizer = phase_optimizer(model, config, replace(phase, lr=start))
    ratios = [group["lr"] / start for group in optimizer.param_groups]  # head and layer-decay ratios stay
    rates, losses = _sweep(
        net,
        dataset,
        optimizer,
        ratios,
        prep=prep,
        skipping=skipping,
        config=config,
        device=device,
        precision=plain.precision,
        schedule=np.geomspace(start, end, steps),
        loss_fn=_loss(config, data, device),
        log=log,
    )
    smoothed = _smooth(losses)
    suggestion = suggest_lr(rates, smoothed)
    plot = write_bytes(out / "lr_find.png", _plot(rates, smoothed, suggestion, phase.name))
    log(
        f"lr-find: {len(rates)} steps from {rates[0]:.1e} to {rates[-1]:.1e} in phase {phase.name}"
        f"{' on cached activations' if cached is not None else ''}; suggested lr {suggestion:.2e}"
    )
    return {
        "phase": phase.name,
        "cached": cached is not None,
        "lrs": rates,
        "losses": losses,
        "smoothed": smoothed,
        "suggestion": suggestion,
        "plot": str(plot),
    }


def _loss(config: TrainConfig, data: PreparedData, device) -> Callable:
    """The loss training would use (without class weights or sampling, which a range test does not need)."""
    if data.task == "classification":
        return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    pos_weight = positive_weights(data.train.decoded.labels).to(device) if config.balance == "weighted" else None
    return loss_function(
        data.task,
        pos_weight=pos_weight if data.task == "multi-label" else None,
        scale=data.target_scale,
        regression_loss="mse" if config.loss == "auto" else config.loss,
    )


def _sweep(model, dataset, optimizer, ratios, *, prep, skipping, config, device, precision, schedule, loss_fn, log):
    rates, losses, best = [], [], math.inf
    batches = iter(())
    model.train()
    with skipping():
        for step, rate in enumerate(shown(schedule, "lr-find", log, unit="steps")):
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = rate * ratio
            try:
                inputs, targets = next(batches)
            except StopIteration:
                loader = make_loader(
                    dataset,
                    batch_size=config.batch_size,
                    shuffle=True,
                    seed=config.seed + step,
                    dist_ctx=DistContext(),
                    drop_last=len(dataset) > config.batch_size,
                )
                batches = iter(loader)
                inputs, targets = next(batches)
            with autocast(device, precision):
                loss = loss_fn(model(prep(inputs)), targets.to(device))
            value = loss.item()
            if not math.isfinite(value):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rates.append(float(rate))
            losses.append(value)
            smoothed = _smooth(losses)[-1]
            best = min(best, smoothed)
            if step > 10 and smoothed > 4 * best:  # diverged: the rest of the range tells nothing
                break
    return rates, losses


def _smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Exponential moving average with bias correction, as fastai's recorder."""
    out, average = [], 0.0
    for i, value in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta**i))
    return out


def suggest_lr(rates: list[float], smoothed: list[float]) -> float:
    """The rate where the smoothed loss falls fastest (per decade of rate), before its minimum.

    Examples:
        >>> rates = list(np.geomspace(1e-5, 1, 50))
        >>> suggest_lr(rates, [1 / (1 + np.exp(4 * (np.log10(r) + 3))) + r for r in rates])
        0.001...
    """
    if len(rates) < 3:
        raise ConfigError("The loss diverged within the first steps; lower start, or check the data.", argument="start")
    lowest = int(np.argmin(smoothed))
    stop = max(lowest, 2)
    slope = np.gradient(np.asarray(smoothed[: stop + 1]), np.log10(rates[: stop + 1]))
    return float(rates[int(np.argmin(slope))])


def _plot(rates, smoothed, suggestion, phase: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rates, smoothed)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested {suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(f"learning-rate range test, phase {phase}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
