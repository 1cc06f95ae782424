"""What a run does once its epochs are done: calibration, the peft adapter, the summary and the model card."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ...adapters import ADAPTER_FOLDER, save_adapter
from ...adapters.lora import copy_model
from ...model.factory import is_object_spec
from ...runtime.fastpath import FastPath
from ..folder.calibration import calibrate, calibrate_labels
from ..folder.model_card import write_model_card
from ..folder.run_folder import RunRecord, load_run, run_model, summary
from ..parallel.sharding import is_sharded
from ..strategies import ADAPTER_STRATEGIES
from .loop import outputs_of

__all__ = ["finish_run"]


def finish_run(record: RunRecord, model: nn.Module, *, stopped: bool, main: bool, log) -> dict:
    """Calibrate best.pt, save a lora or dora run's adapter, write report.json and MODEL_CARD.md (the main process)."""
    config = record.config
    out = Path(config.out)
    if main and record.best is not None and record.data.task == "regression":
        if record.best_outputs is not None:
            record.interval = _interval(record, out, log)
        _save_adapter(out, record, log, model)
    elif main and record.best is not None:
        record.calibration = _calibrate(record, out, log, model)
        _save_adapter(out, record, log, model)
    result = summary(record, model, stopped=stopped, write=main)
    if main:
        write_model_card(out)
    return result


def _calibrate(record: RunRecord, out: Path, log, model: nn.Module) -> dict | None:
    """The temperature of best.pt (one per label for several labels), written for predict."""
    split = f"validation ({record.data.splits})"
    if record.best_outputs is None:
        # Validation kept no logits of best.pt (under torchrun, or its epoch came before a resume): best.pt's
        # weights in a copy of the network in memory, on the held-out images at hand.
        best = _best_model(out, model, copy=True)
        fast = record.kernels.inference or FastPath(False, "fp32", "not measured")
        data = record.data
        record.best_outputs = outputs_of(best, data.val, data.preprocessing, fast, data.task, len(data.class_names))
    logits, targets = record.best_outputs  # training's validation of best.pt
    epoch = record.best["epoch"]
    if record.data.task == "multi-label":
        return calibrate_labels(out, logits, targets, epoch, split, record.data.class_names, log=log)
    return calibrate(out, logits, targets, epoch, split, log=log)


def _best_model(out: Path, model: nn.Module, *, copy: bool) -> nn.Module:
    """best.pt's weights in ``model`` (or a copy of it), on its device; a sharded network is built anew instead."""
    state = load_run(out, which="best")
    if is_sharded(model):
        return run_model(state, out).to(next(model.parameters()).device)
    return run_model(state, out, model=copy_model(model) if copy else model)


def _interval(record: RunRecord, out: Path, log) -> dict:
    """The split-conformal interval of best.pt from its validation residuals, written for predict."""
    from ...tasks.conformal import LEVEL, split_conformal, write_interval

    outputs, targets = record.best_outputs
    residuals = (record.data.target_scale.restore(outputs) - targets.float()).numpy()
    width = split_conformal(residuals, LEVEL)
    facts = write_interval(out, half_width=width, level=LEVEL, images=len(residuals), epoch=record.best["epoch"])
    log(
        f"interval: {LEVEL:.0%} split-conformal, value ± {width:.4g} {record.data.class_names[0]} "
        f"(from the residuals of {len(residuals)} validation images)"
    )
    return facts


def _save_adapter(out: Path, record: RunRecord, log, model: nn.Module) -> None:
    """A lora or dora run's best adapters and head in peft's own format, for peft users without transferkit.

    A module given from Python takes the best weights itself (no name rebuilds it); others go into a copy.
    """
    config = record.config
    if config.strategy not in ADAPTER_STRATEGIES:
        return
    given = is_object_spec(config.model)
    trained = _best_model(out, model, copy=not given)
    class_names = record.data.class_names
    base = {
        "model": config.model,
        "weights": config.weights,
        "image_size": config.image_size,
        "in_chans": config.in_chans,
        "num_classes": len(class_names),
        "class_names": class_names,
    }
    folder = save_adapter(trained, out / ADAPTER_FOLDER, base=base)
    log(f"adapter: {folder} (peft's format: adapter_config.json, adapter_model.safetensors; base.json names the base)")
