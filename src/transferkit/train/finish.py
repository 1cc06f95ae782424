"""What a run does once its epochs are done: calibration, the peft adapter, the summary and the model card."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..model.factory import is_object_spec
from .config import TrainConfig
from .run_folder import RunRecord, summary
from .strategies import ADAPTER_STRATEGIES

__all__ = ["finish_run"]


def finish_run(record: RunRecord, model: nn.Module, *, stopped: bool, main: bool, log) -> dict:
    """Calibrate best.pt, save a lora or dora run's adapter, write report.json and MODEL_CARD.md (the main process)."""
    config = record.config
    out = Path(config.out)
    if main and record.best is not None and record.data.task == "regression":
        if record.best_outputs is not None:
            record.interval = _interval(record, out, log)
        _save_adapter(out, config, log, model)
    elif main and record.best is not None:
        record.calibration = _calibrate(record, out, log, model)
        _save_adapter(out, config, log, model)
    result = summary(record, model, stopped=stopped, write=main)
    if main:
        from ..inference.model_card import write_model_card

        write_model_card(out)
    return result


def _calibrate(record: RunRecord, out: Path, log, model: nn.Module) -> dict | None:
    """The temperature of best.pt (one per label for several labels), written for predict."""
    from ..inference.calibration import calibrate, calibrate_labels
    from ..inference.runs import calibrate_run

    split = f"validation ({record.data.splits})"
    if record.best_outputs is None and is_object_spec(record.config.model):
        # A resumed run of a module given from Python: best.pt into a copy of it, on the held-out images at hand.
        from ..adapters.lora import copy_model
        from ..inference.runs import held_out_outputs, load_trained

        device = str(next(model.parameters()).device)
        trained = load_trained(out, device=device, trust_code=True, model=copy_model(model))
        record.best_outputs = held_out_outputs(trained, record.data.val.decoded, None)
    if record.best_outputs is None:
        # A resumed run whose best epoch came before the resume computes best.pt's logits again
        # from the run folder. The run just imported MODEL's code itself: trusting it again adds nothing.
        return calibrate_run(out, device=record.config.device, trust_code=True, log=log)
    logits, targets = record.best_outputs  # training's validation of best.pt
    if record.data.task == "multi-label":
        return calibrate_labels(out, logits, targets, record.best["epoch"], split, record.data.class_names, log=log)
    return calibrate(out, logits, targets, record.best["epoch"], split, log=log)


def _interval(record: RunRecord, out: Path, log) -> dict:
    """The split-conformal interval of best.pt from its validation residuals, written for predict."""
    from ..tasks.conformal import LEVEL, split_conformal, write_interval

    outputs, targets = record.best_outputs
    residuals = (record.data.target_scale.restore(outputs) - targets.float()).numpy()
    width = split_conformal(residuals, LEVEL)
    facts = write_interval(out, half_width=width, level=LEVEL, images=len(residuals), epoch=record.best["epoch"])
    log(
        f"interval: {LEVEL:.0%} split-conformal, value ± {width:.4g} {record.data.class_names[0]} "
        f"(from the residuals of {len(residuals)} validation images)"
    )
    return facts


def _save_adapter(out: Path, config: TrainConfig, log, model: nn.Module) -> None:
    """A lora or dora run's best adapters and head in peft's own format, for peft users without transferkit.

    A module given from Python takes the best weights itself (no name rebuilds it); others are built anew.
    """
    if config.strategy not in ADAPTER_STRATEGIES:
        return
    from ..adapters import ADAPTER_FOLDER, save_adapter
    from ..inference.runs import load_trained

    given = is_object_spec(config.model)
    device = str(next(model.parameters()).device) if given else "cpu"
    trained = load_trained(out, device=device, trust_code=True, model=model if given else None)
    base = {
        "model": config.model,
        "weights": config.weights,
        "image_size": config.image_size,
        "in_chans": config.in_chans,
        "num_classes": len(trained.class_names),
        "class_names": trained.class_names,
    }
    folder = save_adapter(trained.model, out / ADAPTER_FOLDER, base=base)
    log(f"adapter: {folder} (peft's format: adapter_config.json, adapter_model.safetensors; base.json names the base)")
