"""Use a finished run: rebuild its model from the checkpoint alone, evaluate it, predict with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..data.decode import ImageDataset, decode, loader_workers
from ..data.preprocess import BatchPrep, Preprocessing
from ..data.sources import open_data, split_items
from ..errors import DataError
from ..model.factory import create_model
from ..train.config import TrainConfig
from ..train.fastpath import FastPath, resolve_device
from ..train.loop import evaluate, tta_warning
from ..train.metrics import classification_metrics
from ..train.run_folder import check_model_code, load_model_state, load_run
from .report import calibration, write_report

__all__ = ["TrainedModel", "evaluate_run", "load_trained"]


@dataclass
class TrainedModel:
    """A fine-tuned model in eval mode with the preprocessing and class names it was trained with."""

    model: nn.Module
    preprocessing: Preprocessing
    class_names: list[str]
    config: TrainConfig
    fast: FastPath
    notes: list[str] = field(default_factory=list)


def load_trained(
    run: str | Path,
    *,
    which: str = "best",
    device: str = "auto",
    trust_code: bool = False,
) -> TrainedModel:
    """Rebuild a run's model on ``device``: the checkpoint carries architecture, preprocessing and class names.

    Args:
        trust_code: allow a run whose MODEL is ``file.py:factory`` or ``module:factory`` to
            import and run that code. Refused otherwise: run folders are often someone else's.
    """
    state = load_run(run, which=which)
    notes = check_model_code(state, run, trust_code=trust_code)
    config = TrainConfig.from_dict(state["config"])
    model = create_model(config.model, num_classes=len(state["class_names"]), in_chans=config.in_chans)
    load_model_state(model, state, run)
    model.to(resolve_device(device)).eval()
    # The memory format and precision the run measured fastest serve inference too.
    recorded = state.get("fast_path_inference")
    fast = FastPath(**recorded) if recorded else FastPath(False, "fp32", "not recorded")
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    pre = state["preprocessing"]
    preprocessing = Preprocessing(
        tuple(pre["input_size"]),
        tuple(pre["mean"]),
        tuple(pre["std"]),
        pre["interpolation"],
        pre["crop_pct"],
        pre["crop_mode"],
    )
    return TrainedModel(model, preprocessing, list(state["class_names"]), config, fast, notes)


def evaluate_run(
    run: str | Path,
    data: str | None = None,
    *,
    which: str = "best",
    batch_size: int | None = None,
    device: str = "auto",
    trust_code: bool = False,
    split: str = "val",
    report: bool = False,
    tta: bool = False,
) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class precision, recall and F1, and the confusion matrix.

    ``split`` ``val`` evaluates, for DATA with a validation folder, its images; for the DATA the
    run trained on (or none), the run's own held-out split; otherwise every image of DATA.
    ``test`` evaluates the test folder (or a CSV's test rows), which training never sees.
    ``batch_size`` defaults to the one the run measured fastest for inference. With ``report``,
    ``report.html`` and its plots are written into the run folder
    (:func:`~transferkit.inference.report.write_report`). ``tta`` averages each image with its
    mirror image (wrong for digits and text, whose mirror image is another class or none).
    """
    if split not in ("val", "test"):
        raise DataError(f"split must be val or test, got {split!r}.", argument="split")
    trained = load_trained(run, which=which, device=device, trust_code=trust_code)
    config = trained.config
    spec = data or config.data
    source = open_data(spec)
    if split == "test":
        if source.test is None:
            raise DataError(f"'{spec}' has no test split: add a test/ folder beside train/, or a split column.")
        items, split = source.test, f"test ({source.folders.get('test', 'test')})"
    elif source.val is not None:
        items, split = source.val, f"val ({source.folders.get('val', 'val')})"
    elif spec == config.data:
        _, items = split_items(source.train, val_fraction=config.val_fraction, seed=config.seed)
        split = f"the run's held-out {config.val_fraction:g}"
    else:
        items, split = source.train, "all images"
    unknown = [c for c in source.class_names if c not in trained.class_names]
    if unknown:
        raise DataError(f"DATA has classes the run never saw: {', '.join(unknown)}.")
    # Labels follow the run's class order.
    remap = [trained.class_names.index(c) for c in source.class_names]
    for item in items:
        item.label = remap[item.label]
    pre = trained.preprocessing
    decoded = decode(items, pre, spill_dir=Path(run) if Path(run).is_dir() else None)
    device = next(trained.model.parameters()).device
    dataset = ImageDataset(decoded)
    metrics = evaluate(
        trained.model,
        DataLoader(
            dataset,
            batch_size=batch_size or trained.fast.inference_batch_size,
            num_workers=loader_workers(dataset),
        ),
        num_classes=len(trained.class_names),
        prep=BatchPrep(pre, device, channels_last=trained.fast.channels_last),
        device=device,
        precision=trained.fast.precision,
        outputs=True,
        tta=tta,
    )
    confusion = metrics["confusion"]
    totals = confusion.sum(1)
    per_class = {
        name: (confusion[i, i].item() / totals[i].item() if totals[i] else None)
        for i, name in enumerate(trained.class_names)
    }
    scores = classification_metrics(confusion.tolist(), trained.class_names)
    warning = tta_warning(trained.class_names) if tta else None
    result = {
        "run": str(run),
        "data": spec,
        "split": split,
        "tta": tta,
        "images": metrics["count"],
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
        "macro_f1": scores["macro_f1"],
        "loss": metrics["loss"],
        "per_class": scores["per_class"],
        "most_confused": scores["most_confused"],
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": trained.class_names,
        "skipped_images": [{"name": n, "reason": r} for n, r in source.skipped + decoded.skipped],
        "calibration": calibration(metrics["probabilities"], metrics["targets"]),
        "notes": trained.notes + ([warning] if warning else []),
    }
    if report:
        if not Path(run).is_dir():
            raise DataError(f"report needs a run folder to write into; '{run}' is a file.", argument="report")
        history = load_run(run, which="last")["history"]
        result["report"] = str(
            write_report(
                run,
                result,
                history=history,
                images=decoded.images,
                names=decoded.names,
                probabilities=metrics["probabilities"],
                targets=metrics["targets"],
            )
        )
    return result
