"""Use a finished run: rebuild its model from the checkpoint alone, evaluate it, predict with it."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..data.decode import Decoded, ImageDataset, decode, loader_workers
from ..data.hub_data import HfOptions
from ..data.preprocess import BatchPrep, Preprocessing, legacy_note
from ..data.sources import open_data, split_items
from ..errors import DataError, RunError
from ..runtime.fastpath import FastPath, resolve_device
from ..tasks.calibration import reliability
from ..tasks.conformal import read_interval
from ..tasks.metrics import classification_metrics
from ..tasks.objective import TargetScale
from ..train.config import TrainConfig
from ..train.folder.calibration import CALIBRATION_FILE, calibrate, calibrate_labels, probability_kind, read_temperature
from ..train.folder.run_folder import check_model_code, load_run, run_model
from ..train.phases.loop import evaluate, outputs_of, tta_warning
from .report import write_report
from .task_eval import evaluate_task
from .trained import TrainedModel

__all__ = [
    "TrainedModel",
    "calibrate_run",
    "evaluate_classes",
    "evaluate_run",
    "evaluation_items",
    "held_out_items",
    "held_out_outputs",
    "load_trained",
]


def load_trained(
    run: str | Path,
    *,
    which: str = "best",
    device: str = "auto",
    trust_code: bool = False,
    model: nn.Module | None = None,
) -> TrainedModel:
    """Rebuild a run's model on ``device``: the checkpoint carries architecture, preprocessing and class names.

    Args:
        trust_code: allow a run whose MODEL is ``file.py:factory`` or ``module:factory`` to
            import and run that code. Refused otherwise: run folders are often someone else's.
        model: a module of the run's architecture to put its weights into, instead of building
            MODEL (needed for a run trained from Python on a module: its MODEL names no factory).
    """
    state = load_run(run, which=which)
    config = TrainConfig.from_dict(state["config"])
    notes = check_model_code(state, run, trust_code=trust_code) if model is None else []
    model = run_model(state, run, model=model)
    model.to(resolve_device(device)).eval()
    # The memory format and precision the run measured fastest serve inference too.
    recorded = state.get("fast_path_inference")
    fast = FastPath(**recorded) if recorded else FastPath(False, "fp32", "not recorded")
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    preprocessing = Preprocessing.from_dict(state["preprocessing"])
    if note := legacy_note(state["preprocessing"]):
        notes.append(note)
    trained = TrainedModel(model, preprocessing, list(state["class_names"]), config, fast, notes)
    trained.epoch = state.get("epoch")
    row = next((r for r in state["history"] if r.get("epoch") == trained.epoch), None)
    if row is not None:
        trained.validated = {"row": row, "kernels": state.get("fast_path")}
    trained.task, trained.label_spec = config.task, config.label_spec()
    if config.task == "multi-label":
        thresholds = (state.get("best_metrics") or {}).get("thresholds")
        valid = isinstance(thresholds, list) and len(thresholds) == len(trained.class_names)
        trained.thresholds = [float(t) for t in thresholds] if valid else [0.5] * len(trained.class_names)
    if config.task == "regression":
        scale = state.get("target_scale") or {}
        try:
            trained.target_scale = TargetScale(float(scale["mean"]), float(scale["std"]))
        except (KeyError, TypeError, ValueError):
            raise RunError(f"Run '{run}' predicts numbers but its checkpoint has no target scale.") from None
        if which == "best" and Path(run).is_dir():
            trained.interval = read_interval(run, trained.epoch)
    if which == "best" and Path(run).is_dir() and config.task != "regression":
        trained.temperature = found = read_temperature(run, trained.epoch)
        per_label = config.task == "multi-label"
        if found is not None and (
            isinstance(found, list) != per_label or per_label and len(found) != len(trained.class_names)
        ):
            raise RunError(f"'{Path(run) / CALIBRATION_FILE}' does not fit this run's outputs; delete it.")
    return trained


def evaluation_items(source, config: TrainConfig | None, spec: str, split: str = "val") -> tuple[list, str]:
    """The images ``eval`` uses, and how to call them: the test split, a validation folder, the run's
    own held-out split (DATA the run trained on), or else all of DATA."""
    if split == "test":
        if source.test is None:
            raise DataError(f"'{spec}' has no test split: add a test/ folder beside train/, or a split column.")
        return source.test, f"test ({source.folders.get('test', 'test')})"
    if source.val is not None:
        return source.val, f"val ({source.folders.get('val', 'val')})"
    if config is not None and spec == config.data:
        _, items = split_items(source.train, val_fraction=config.val_fraction, seed=config.seed)
        return items, f"the run's held-out {config.val_fraction:g}"
    return source.train, "all images"


def _against_validation(trained: TrainedModel, metrics: dict) -> dict:
    """This evaluation beside the validation training did of the same checkpoint, and why they differ if they do."""
    row, kernels = trained.validated["row"], trained.validated["kernels"] or {}
    same = metrics["accuracy"] == row["val_acc"]
    out = {"epoch": row["epoch"], "val_acc": row["val_acc"], "val_loss": row["val_loss"], "same": same, "why": None}
    if same:
        return out
    inference = trained.fast
    if row.get("cached"):
        how = "ran the head on activations computed once and kept (in fp16 where accurate to 1e-3 of their scale)"
    elif (kernels.get("channels_last"), kernels.get("precision")) != (inference.channels_last, inference.precision):
        trained_with = f"{'channels-last' if kernels.get('channels_last') else 'NCHW'} {kernels.get('precision')}"
        evaluated = f"{'channels-last' if inference.channels_last else 'NCHW'} {inference.precision}"
        how = f"ran with the training kernels ({trained_with}); eval runs the inference kernels ({evaluated})"
    else:
        how = "ran in other batches (one per process under torchrun, or another --batch-size)"
    out["why"] = (
        f"accuracy {metrics['accuracy']:.4f} here against {row['val_acc']:.4f} when training validated epoch "
        f"{row['epoch']} on the same images: validation {how}, and rounding moves images on the decision boundary"
    )
    return out


def _hf_options(config: TrainConfig | None) -> HfOptions | None:
    """The run's Hugging Face dataset and columns, for its DATA or another of the same layout."""
    return None if config is None else config.hf_options()


def held_out_items(trained: TrainedModel, spec: str) -> tuple[list, str]:
    """The run's held-out images of DATA ``spec`` (see :func:`evaluation_items`), labelled in the run's
    class order; images of classes the run does not know are left out."""
    source = open_data(spec, trained.label_spec, _hf_options(trained.config))
    items, split = evaluation_items(source, trained.config, spec)
    if trained.task != "classification":
        return _by_model_labels(items, source.class_names, trained), split
    remap = {i: trained.class_names.index(c) for i, c in enumerate(source.class_names) if c in trained.class_names}
    items = [item for item in items if item.label in remap]
    for item in items:
        item.label = remap[item.label]
    return items, split


def _by_model_labels(items: list, names: list[str], trained: TrainedModel) -> list:
    """Several labels per image re-ordered from DATA's label ``names`` to the model's; one DATA lacks is absent."""
    if trained.task == "multi-label":
        where = [names.index(n) if n in names else None for n in trained.class_names]
        for item in items:
            item.label = tuple(0 if k is None else item.label[k] for k in where)
    return items


def _weights_as_trained(source: str, model: str | None, device: str) -> TrainedModel:
    from .pretrained import load_weights_model

    loaded = load_weights_model(source, model=model, device=device)
    fast = FastPath(False, "fp32", "default")
    return TrainedModel(
        loaded.model, loaded.preprocessing, loaded.class_names, None, fast, loaded.notes, loaded.named_classes
    )


def _data_classes_only(confusion: torch.Tensor, names: list[str], outputs: list[int]) -> tuple[torch.Tensor, list]:
    """The confusion matrix over DATA's classes, when the model has more (an ImageNet head on three classes).

    Predictions of any other class are gathered in one ``(other)`` class, which no image belongs to.
    """
    if len(outputs) == len(names):
        return confusion, names
    rest = [i for i in range(len(names)) if i not in set(outputs)]
    kept = confusion[outputs]  # (D, K): rows of DATA's classes
    square = torch.zeros(len(outputs) + 1, len(outputs) + 1, dtype=confusion.dtype)
    square[:-1, :-1] = kept[:, outputs]
    square[:-1, -1] = kept[:, rest].sum(1)
    return square, [names[i] for i in outputs] + ["(other)"]


def _check_weights_exist(source: str) -> None:
    from ..weights.hub import is_remote
    from ..weights.registry import list_weights

    if Path(source).exists() or is_remote(source) or source in {r.name for r in list_weights()}:
        return
    raise DataError(f"'{source}' does not exist: give a run folder, a checkpoint file or weights such as lite0.")


def _class_map(data_classes: list[str], trained: TrainedModel) -> list[int]:
    """For each of DATA's classes, the model output it is: by name, or by order for unnamed outputs."""
    if trained.named_classes:
        unknown = [c for c in data_classes if c not in trained.class_names]
        if unknown:
            never = "the run never saw" if trained.config is not None else "the weights' head does not have"
            raise DataError(f"DATA has classes {never}: {', '.join(unknown[:5])}.")
        return [trained.class_names.index(c) for c in data_classes]
    if len(data_classes) != len(trained.class_names):
        raise DataError(
            f"DATA has {len(data_classes)} classes and the weights' head {len(trained.class_names)} outputs; "
            "evaluate with the data the head was trained for."
        )
    trained.class_names = list(data_classes)
    trained.notes.append(
        "the weights' outputs are unnamed: DATA's classes are taken in sorted order, the first as output 0"
    )
    return list(range(len(data_classes)))


def evaluate_run(
    run: str | Path,
    data: str | None = None,
    *,
    model: str | None = None,
    which: str = "best",
    batch_size: int | None = None,
    device: str = "auto",
    trust_code: bool = False,
    split: str = "val",
    report: bool = False,
    tta: bool = False,
    module: nn.Module | None = None,
) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class precision, recall and F1, and the confusion matrix.

    ``run`` is a run folder, an exported ``.onnx`` with its sidecar (run by onnxruntime), or
    weights (a checkpoint file, registry name or hub spec, built as ``model`` says:
    :func:`~transferkit.inference.pretrained.load_weights_model`); the last two need ``data``.
    DATA's classes meet the weights' outputs by name when the head's classes are named
    (ImageNet), otherwise in order: the first class folder (sorted) is output 0.

    ``split`` ``val`` evaluates, for DATA with a validation folder, its images; for the DATA the
    run trained on (or none), the run's own held-out split; otherwise every image of DATA.
    ``test`` evaluates the test folder (or a CSV's test rows), which training never sees.
    ``batch_size`` defaults to the one the run measured fastest for inference. With ``report``,
    ``report.html`` and its plots are written into the run folder
    (:func:`~transferkit.inference.report.write_report`). ``tta`` averages each image with its
    mirror image (wrong for digits and text, whose mirror image is another class or none).
    ``module``: the module a run trained from Python on a module puts its weights into (see :func:`load_trained`).
    """
    if split not in ("val", "test"):
        raise DataError(f"split must be val or test, got {split!r}.", argument="split")
    if Path(run).is_dir():
        trained = load_trained(run, which=which, device=device, trust_code=trust_code, model=module)
        config = trained.config
        spec = data or config.data
    else:
        trained, config, spec = _weights_for_eval(run, data, model, device, report=report), None, data
    if trained.task != "classification":  # several labels, or numbers: their own metrics
        if tta:
            raise DataError(f"tta serves runs of classes; this model's task is {trained.task}.", argument="tta")
        source = open_data(spec, trained.label_spec, _hf_options(config))
        items, split = evaluation_items(source, config, spec, split)
        items = _by_model_labels(items, source.class_names, trained)
        folder = Path(run) if Path(run).is_dir() else None
        history = load_run(run, which="last")["history"] if report and folder else None
        about = {"run": str(run), "data": spec, "split": split, "notes": trained.notes}
        result = evaluate_task(trained, items, spill=folder, batch_size=batch_size, about=about, report=history)
        result["skipped_images"] = [{"name": n, "reason": r} for n, r in source.skipped] + result["skipped_images"]
        return result
    source = open_data(spec, hf=_hf_options(config))
    items, split = evaluation_items(source, config, spec, split)
    remap = _class_map(source.class_names, trained)
    for item in items:
        item.label = remap[item.label]
    decoded = decode(items, trained.preprocessing, spill_dir=Path(run) if Path(run).is_dir() else None)
    about = {"run": str(run), "data": spec, "split": split, "tta": tta}
    return evaluate_classes(
        trained,
        decoded,
        about=about,
        remap=remap,
        skipped=source.skipped,
        batch_size=batch_size,
        tta=tta,
        report=Path(run) if report else None,
    )


def _weights_for_eval(run: str | Path, data: str | None, model: str | None, device: str, *, report: bool):
    """An exported ``.onnx`` or weights ready to evaluate on ``data``, which they need (a run knows its own)."""
    _check_weights_exist(str(run))
    if data is None:
        raise DataError(f"Evaluating weights ('{run}') needs data (DATA); a run folder knows its own.", argument="data")
    if report:
        raise DataError(f"report needs a run folder to write into; '{run}' is weights.", argument="report")
    if str(run).endswith(".onnx"):
        from .onnx_model import load_onnx

        return load_onnx(run, device=device)
    return _weights_as_trained(run, model, device)


def evaluate_classes(
    trained: TrainedModel,
    decoded: Decoded,
    *,
    about: dict,
    remap: list[int] | None = None,
    skipped: list | None = None,
    batch_size: int | None = None,
    tta: bool = False,
    report: Path | None = None,
) -> dict:
    """:func:`evaluate_run`'s scores of a model of classes on decoded images (``about``: what they are: ``run``,
    ``data``, ``split``); ``remap`` gives the model's output of each of the data's classes, and ``report``
    the run folder to write report.html into."""
    pre = trained.preprocessing
    remap = remap or list(range(len(trained.class_names)))
    device = next(trained.model.parameters()).device
    dataset = ImageDataset(decoded)
    size = batch_size or trained.fast.inference_batch_size
    metrics = evaluate(
        trained.model,
        DataLoader(dataset, batch_size=size, num_workers=loader_workers(dataset)),
        num_classes=len(trained.class_names),
        prep=BatchPrep(pre, device, channels_last=trained.fast.channels_last),
        device=device,
        precision=trained.fast.precision,
        outputs=True,
        tta=tta,
        progress="eval",  # a bar on a terminal
    )
    confusion, class_names = _data_classes_only(metrics["confusion"], trained.class_names, remap)
    totals = confusion.sum(1)
    per_class = {
        name: (confusion[i, i].item() / totals[i].item() if totals[i] else None) for i, name in enumerate(class_names)
    }
    scores = classification_metrics(confusion.tolist(), class_names)
    warning = tta_warning(trained.class_names) if tta else None
    split = about.get("split", "")
    result = {
        **about,
        "images": metrics["count"],
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
        "macro_f1": scores["macro_f1"],
        "loss": metrics["loss"],
        "per_class": scores["per_class"],
        "most_confused": scores["most_confused"],
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": class_names,
        "skipped_images": [{"name": n, "reason": r} for n, r in (skipped or []) + decoded.skipped],
        "calibration": reliability(metrics["probabilities"], metrics["targets"]),
        "temperature": trained.temperature,
        "calibrated": reliability((metrics["logits"] / trained.temperature).softmax(-1), metrics["targets"])
        if trained.temperature
        else None,
        "probabilities": probability_kind(trained.temperature),  # the report's, as predict gives them
        "notes": trained.notes + ([warning] if warning else []),
    }
    if trained.validated is not None and split.startswith("the run's held-out") and not tta:
        result["validation"] = _against_validation(trained, metrics)
        if not result["validation"]["same"]:
            result["notes"].append(result["validation"]["why"])
    if report is not None:
        result["report"] = _report(report, result, decoded, metrics, trained.temperature)
    return result


def _report(folder: Path, result: dict, decoded: Decoded, metrics: dict, temperature: float | None) -> str:
    """report.html in the run ``folder``, its probabilities calibrated where the run keeps a temperature (the ones
    predict gives)."""
    if not folder.is_dir():
        raise DataError(f"report needs a run folder to write into; '{folder}' is a file.", argument="report")
    history = load_run(folder, which="last")["history"]
    probabilities = (metrics["logits"] / (temperature or 1.0)).softmax(-1)
    page = write_report(
        folder,
        result,
        history=history,
        images=decoded.images,
        names=decoded.names,
        probabilities=probabilities,
        targets=metrics["targets"],
    )
    return str(page)


def calibrate_run(run: str | Path, *, device: str = "auto", trust_code: bool = False, log=print) -> dict | None:
    """Fit the temperature of ``run``'s best checkpoint on its held-out images and write ``calibration.json``:
    one for classes, one per label for several labels per image (runs of numbers have an interval instead).

    Returns what was written (temperature, expected calibration error and negative
    log-likelihood before and after), or None when the run has no held-out image.
    """
    trained = load_trained(run, device=device, trust_code=trust_code)
    if trained.task == "regression":
        raise RunError(f"Run '{run}' predicts numbers: they get an interval, not a temperature.")
    items, split = held_out_items(trained, trained.config.data)
    if not items:
        return None
    logits, targets = held_out_outputs(trained, items, Path(run))
    if trained.task == "multi-label":
        return calibrate_labels(run, logits, targets, trained.epoch, split, trained.class_names, log=log)
    return calibrate(run, logits, targets, trained.epoch, split, log=log)


def held_out_outputs(
    trained: TrainedModel, items: list | Decoded, spill: Path | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and targets of ``trained`` on held-out ``items`` (or their images, decoded)."""
    decoded = items if isinstance(items, Decoded) else decode(items, trained.preprocessing, spill_dir=spill)
    dataset, outputs = ImageDataset(decoded), len(trained.class_names)
    return outputs_of(trained.model, dataset, trained.preprocessing, trained.fast, trained.task, outputs)
