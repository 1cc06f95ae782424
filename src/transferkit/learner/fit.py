"""``fit`` from Python: the user's own module and data, or MODEL and DATA strings, through the one engine.

:func:`fit` turns what it is given into a :class:`~transferkit.train.config.TrainConfig` and, for a
Dataset, the decoded data a run trains on (:class:`~transferkit.train.setup.PreparedData`), then
runs :func:`transferkit.advice.auto.fit` (the engine, with strategy auto resolved) on them and returns a
:class:`~transferkit.learner.Learner`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..advice.auto import fit as train_run
from ..data.decode import Decoded
from ..data.items import Item
from ..data.sources import split_items
from ..data.user_data import UserData, as_dataset, read_dataset
from ..deploy.parity import PARITY_IMAGES
from ..errors import ConfigError, DataError, FreezeError
from ..model.factory import object_spec
from ..model.surgery import find_head
from ..train.config import TrainConfig
from ..train.setup import PreparedData, assemble_data
from ..weights.preprocessing import resolve_preprocessing
from .learner import Learner, sample

__all__ = ["fit"]

AS_IS = "as-is"  # the strategy of a module given without one: its own requires_grad is the plan


def fit(
    model: nn.Module | str | TrainConfig,
    train: Dataset | DataLoader | tuple | str | Path | None = None,
    val: Dataset | DataLoader | tuple | None = None,
    *,
    strategy: str | None = None,
    epochs: int | None = None,
    out: str | Path | None = None,
    classes: list[str] | None = None,
    task: str | None = None,
    overwrite: bool = False,
    resume: bool | str | Path = False,
    log: Callable[[str], None] = print,
    **settings: object,
) -> Learner:
    """Train ``model`` on ``train``, validating on ``val``; returns a :class:`~transferkit.learner.Learner`.

    Args:
        model: an ``nn.Module`` as you left it (loaded, frozen, its head replaced): it is trained in
            place, and ends with the weights of its best epoch. Or a MODEL string (``resnet18``,
            ``torchvision:alexnet``), built with its pretrained weights. Or a
            :class:`~transferkit.TrainConfig`, the whole run described (``train`` and ``val`` then unused).
        train: a map-style ``Dataset`` of ``(image, target)``, a ``DataLoader`` over one, an
            ``(images, targets)`` pair of tensors, or a DATA string (a folder, a CSV, ``hf:``, shards).
            Float tensors are used as your transforms made them; PIL images, uint8 tensors and arrays
            get the model's preprocessing. Targets are class indices, 0/1 vectors or numbers.
        val: held-out data of the same kind (default: a stratified share of ``train``, ``val_fraction``).
        strategy: for a module, default ``as-is``: the parameters you froze stay frozen and the rest
            trains; a named one (``freeze``, ``full``, ``lora`` ...) sets them itself. For MODEL, ``full``.
        epochs: epochs in all (default 5).
        out: the run folder; default a temporary one that :meth:`Learner.save` keeps.
        classes: class names, where ``train`` has no ``classes`` of its own.
        task: classification, multi-label or regression (default: what the targets are).
        overwrite: replace a run already in ``out``.
        resume: continue the run in ``out`` from its last epoch, on the same data (a fresh module of
            the same architecture, or the one it stopped with); ``epochs`` may lengthen it. With a
            TrainConfig: True continues ``config.out``, a path the run there.
        log: where each line of the run goes.
        settings: any other :class:`~transferkit.TrainConfig` field (``lr``, ``batch_size``, ``seed`` ...);
            with a TrainConfig, :func:`transferkit.train.engine.fit`'s arguments (``trust_code``, ``stop_after``).
    """
    if isinstance(model, TrainConfig):
        if train is not None or val is not None:
            raise ConfigError("fit(config) reads its data from config.data; leave train and val out.", argument="train")
        return _fit_config(model, epochs=epochs, resume=resume, overwrite=overwrite, log=log, settings=settings)
    if train is None:
        raise ConfigError("fit needs train: a Dataset, a DataLoader, (images, targets) or a DATA string.")
    holder, out = _out_folder(out)
    common = {"epochs": epochs or 5, "out": str(out), **settings}
    if isinstance(model, str):
        return _fit_strings(
            model, train, val, holder, out, common, strategy=strategy, task=task, overwrite=overwrite, log=log
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model must be an nn.Module, a MODEL string or a TrainConfig; got {type(model).__name__}.",
            argument="model",
        )
    if resume:
        return _resume(model, train, val, out, epochs=epochs, classes=classes, log=log, settings=settings)
    if "weights" in settings:
        raise ConfigError(
            "weights: a module is trained as given; load weights into it first with tk.load_pretrained(model, ...).",
            argument="weights",
        )
    return _fit_module(
        model,
        train,
        val,
        holder,
        out,
        common,
        strategy=strategy,
        classes=classes,
        task=task,
        overwrite=overwrite,
        log=log,
    )


def _fit_strings(model: str, train, val, holder, out: Path, common: dict, *, strategy, task, overwrite, log) -> Learner:
    """MODEL with its pretrained weights on DATA, as the command line trains them."""
    if not isinstance(train, str | Path) or val is not None:
        raise ConfigError(
            "model as a MODEL string trains on train as a DATA string (a folder with a val folder of its own); "
            "for a Dataset, give the module: tk.create_model(name, pretrained=True).",
            argument="train",
        )
    config = TrainConfig(
        model=model, data=str(train), strategy=strategy or "full", task=task or "classification", **common
    )
    summary = train_run(config, overwrite=overwrite, log=log)
    return Learner(out, summary=summary, temporary=holder, trust_code=True)


def _fit_config(config: TrainConfig, *, epochs, resume, overwrite: bool, log, settings: dict) -> Learner:
    """A run of settings, or (``resume``) the run in ``config.out`` or the folder named, its epochs lengthened."""
    config = config if epochs is None else replace(config, epochs=epochs)
    if resume:
        folder = Path(config.out if resume is True else resume)
        changes = {"epochs": epochs} if epochs else None
        summary = train_run(None, resume=folder, changes=changes, overwrite=overwrite, log=log, **settings)
    else:
        summary = train_run(config, overwrite=overwrite, log=log, **settings)
    return Learner(Path(summary.get("out") or config.out), summary=summary, trust_code=True)  # it just ran


def _fit_module(
    model: nn.Module, train, val, holder, out: Path, common: dict, *, strategy, classes, task, overwrite, log
) -> Learner:
    """A module of the user's on a DATA string or on Datasets, with its own freezing or a named strategy."""
    strategy, freeze = _strategy(model, strategy, log)
    base = {"model": object_spec(model), "weights": "none", "strategy": strategy, **common}
    if freeze:
        base["freeze"] = freeze
    if isinstance(train, str | Path):
        if val is not None:
            raise ConfigError("val: with train as a DATA string, DATA's own val folder is used.", argument="val")
        config = TrainConfig(data=str(train), task=task or "classification", **base)
        summary = train_run(config, overwrite=overwrite, log=log, module=model)
        return Learner(out, summary=summary, temporary=holder, module=model)
    data, config, transform = _prepare(model, train, val, base, classes=classes, task=task, log=log)
    _check_outputs(model, data)
    summary = train_run(config, overwrite=overwrite, log=log, data=data, module=model)
    held_out = sample(data.val.decoded, PARITY_IMAGES, seed=config.seed, what="the run's held-out split")
    return Learner(
        out,
        summary=summary,
        temporary=holder,
        module=model,
        transform=transform,
        held_out=held_out,
        val=data.val.decoded,
    )


def _resume(model: nn.Module, train, val, out, *, epochs, classes, log, settings) -> Learner:
    """Continue the run in ``out`` on ``train`` and ``val`` read as the run first read them."""
    if out is None or not isinstance(model, nn.Module) or isinstance(train, str | Path):
        raise ConfigError(
            "resume continues a run of a module on Datasets: give the module, the Datasets and out (its folder); "
            "for a run of MODEL and DATA strings: tk.fit(TrainConfig(...), resume=folder).",
            argument="resume",
        )
    try:
        recorded = TrainConfig.from_dict(json.loads((Path(out) / "config.json").read_text())).to_dict()
    except FileNotFoundError:
        raise ConfigError(f"resume: '{out}' holds no run (no config.json).", argument="resume") from None
    base = {**recorded, **{k: v for k, v in settings.items() if k in ("device",)}}
    data, _, transform = _prepare(model, train, val, base, classes=classes, task=recorded["task"], log=log)
    changes = {"epochs": epochs} if epochs else {}
    summary = train_run(None, resume=out, changes=changes, log=log, data=data, module=model)
    held_out = sample(data.val.decoded, PARITY_IMAGES, seed=recorded["seed"], what="the run's held-out split")
    return Learner(out, summary=summary, module=model, transform=transform, held_out=held_out, val=data.val.decoded)


def _out_folder(out: str | Path | None) -> tuple[tempfile.TemporaryDirectory | None, Path]:
    if out is not None:
        return None, Path(out)
    holder = tempfile.TemporaryDirectory(prefix="transferkit-run-")
    return holder, Path(holder.name)


def frozen_paths(model: nn.Module) -> list[str]:
    """The module paths (or parameter names) that hold every frozen parameter of ``model`` and nothing else,
    the fewest that do: ``['features']`` for an AlexNet whose ``features`` are frozen."""
    paths: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        params = [p for _, p in module.named_parameters()]
        if prefix and params and not any(p.requires_grad for p in params):
            paths.append(prefix)
            return
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                paths.append(f"{prefix}.{name}" if prefix else name)
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return paths


def _strategy(model: nn.Module, strategy: str | None, log) -> tuple[str, list[str]]:
    """The strategy a module trains with, and the freeze patterns that give ``as-is`` its plan."""
    frozen = frozen_paths(model)
    total = sum(1 for _ in model.parameters())
    count = sum(1 for p in model.parameters() if not p.requires_grad)
    if strategy not in (None, AS_IS):
        if strategy == "scratch":
            raise ConfigError(
                "strategy scratch rebuilds MODEL from random values; for a module of yours, initialise it yourself "
                "and give strategy 'full'.",
                argument="strategy",
            )
        if count:
            log(
                f"strategy {strategy}: it sets which parameters train itself; the {count} parameter tensors you froze "
                f"({_shown(frozen)}) train or not as it says"
            )
        return strategy, []
    if count == total:
        raise FreezeError(
            f"model: every parameter of the {type(model).__name__} is frozen, and strategy as-is trains what you left "
            "trainable: unfreeze the layers to train (tk.unfreeze) or give a strategy.",
            argument="model",
        )
    head = find_head(model)
    if any(n.startswith(head + ".") and not p.requires_grad for n, p in model.named_parameters()):
        raise FreezeError(f"model: its head '{head}' is frozen; a head for your classes must train.", argument="model")
    if not count:
        log(f"strategy as-is: every parameter of the {type(model).__name__} trains (as strategy full)")
        return "full", []
    if all(n.startswith(head + ".") for n, p in model.named_parameters() if p.requires_grad):
        log(
            f"strategy as-is: your model's own freezing: only its head '{head}' trains, the {count} other parameter "
            "tensors are frozen (as strategy freeze, a linear probe at its rate)"
        )
        return "freeze", []
    log(
        f"strategy as-is: your model's own freezing: {count} of {total} parameter tensors frozen ({_shown(frozen)}), "
        f"{total - count} train (as strategy head with these frozen)"
    )
    return "head", frozen


def _shown(paths: list[str]) -> str:
    return ", ".join(paths) if len(paths) <= 4 else f"{', '.join(paths[:3])}, ... {paths[-1]}"


def _prepare(
    model: nn.Module, train, val, base: dict, *, classes, task, log
) -> tuple[PreparedData, TrainConfig, Callable | None]:
    """The user's Datasets read and split, the config that describes the run on them, and the transform that
    brings a new image to what the held-out Dataset gives (its ``transform``)."""
    image_size = base.get("image_size")
    preprocessing, where = resolve_preprocessing(model, None, image_size=image_size)
    train_data = read_dataset(train, argument="train", preprocessing=preprocessing, classes=classes, task=task)
    if train_data.given and image_size is not None:
        raise ConfigError(
            "image_size: your Dataset gives tensors, used as they are; set their size in its transform.",
            argument="image_size",
        )
    settings = {"task": train_data.task, "data": object_spec(as_dataset(train, "train")), **base}
    if train_data.given:
        if settings.get("augment", "auto") not in ("auto", "none"):
            raise ConfigError(
                "augment: your Dataset gives tensors, used as they are; augment in its transform.", argument="augment"
            )
        settings["augment"] = "none"
    if not train_data.deterministic and settings.get("cache", True):
        settings["cache"] = False
        log(
            "cache: off: reading an item of train twice gave different tensors (random transforms), so the frozen "
            "layers' output cannot be computed once; each epoch runs them"
        )
    config = TrainConfig(**settings)
    if val is None:
        train_part, val_part, splits = _split(train_data, config)
    else:
        val_data = read_dataset(
            val, argument="val", preprocessing=preprocessing, classes=train_data.class_names, task=train_data.task
        )
        if (
            val_data.given != train_data.given
            or val_data.decoded.images.shape[1:] != train_data.decoded.images.shape[1:]
        ):
            raise DataError(
                f"val gives {_kind(val_data)} and train {_kind(train_data)}; give both the same kind and size.",
                argument="val",
            )
        train_part, val_part = train_data.decoded, val_data.decoded
        splits = f"train from {train_data.description}, val from {val_data.description}"
    if train_data.given:
        shape = tuple(train_data.decoded.images.shape[1:])
        how = f"tensors {shape} used as your Dataset's transforms made them"
    else:
        pre = train_data.preprocessing
        how = f"images brought to {pre.size_text}, mean {pre.mean}, std {pre.std}, from {where}"
    log(
        f"data: {len(train_part.labels)} train, {len(val_part.labels)} val items of {train_data.description}, "
        f"{train_data.decoded.storage}; {how}"
    )
    log(f"splits: {splits}")
    data = assemble_data(
        config.data,
        train_data.class_names,
        train_data.preprocessing,
        train_part,
        val_part,
        task=train_data.task,
        fingerprint=train_data.fingerprint(),
        splits=splits,
        log=log,
    )
    transform = train_data.transform if val is None else getattr(as_dataset(val, "val"), "transform", None)
    return data, config, transform


def _kind(data: UserData) -> str:
    shape = tuple(data.decoded.images.shape[1:])
    return f"tensors {shape} as given" if data.given else f"images (brought to {shape})"


def _split(data: UserData, config: TrainConfig) -> tuple[Decoded, Decoded, str]:
    """A held-out share of ``data``, stratified by class with the run's seed, as DATA without a val folder is."""
    labels = data.decoded.labels
    items = [Item(str(i), _label(labels[i], data.task), row=i) for i in range(len(labels))]
    train_items, val_items = split_items(items, val_fraction=config.val_fraction, seed=config.seed)
    parts = []
    for chosen in (train_items, val_items):
        index = torch.tensor([item.row for item in chosen])
        images = data.decoded.images
        part = images[index] if isinstance(images, torch.Tensor) else images.subset(index.tolist())
        names = [data.decoded.names[i] for i in index.tolist()]
        parts.append(Decoded(part, labels[index], names, storage=data.decoded.storage))
    how = f"train and val split {1 - config.val_fraction:g}/{config.val_fraction:g} by seed {config.seed}"
    return parts[0], parts[1], f"{how} from {data.description}"


def _label(value: torch.Tensor, task: str):
    if task == "multi-label":
        return tuple(int(v) for v in value.tolist())
    return float(value) if task == "regression" else int(value)


def _check_outputs(model: nn.Module, data: PreparedData) -> None:
    """The module's output has one value per class (per label; one for a number): else it is refused here, naming
    the head to replace, not in the first batch's loss."""
    wanted = 1 if data.task == "regression" else len(data.class_names)
    head = find_head(model)
    layer = model.get_submodule(head)
    got = getattr(layer, "out_features", None)
    if got is None:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                sample = data.val.decoded.images[:1]
                got = model(_prep(data)(sample).to(next(model.parameters()).device)).shape[-1]
        finally:
            model.train(was)
    if got != wanted:
        what = (
            "a number"
            if data.task == "regression"
            else f"{wanted} {'labels' if data.task == 'multi-label' else 'classes'}"
        )
        raise ConfigError(
            f"model: its head '{head}' gives {got} outputs and train has {what}: "
            f"replace it first with tk.replace_head(model, {wanted}).",
            argument="model",
        )


def _prep(data: PreparedData):
    from ..data.preprocess import BatchPrep

    return BatchPrep(data.preprocessing, torch.device("cpu"), channels_last=False)
