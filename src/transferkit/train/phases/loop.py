"""One epoch of training and one evaluation, as flat functions that can be tested one by one."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ...data.decode import ImageDataset, loader_workers
from ...data.preprocess import BatchPrep, Preprocessing
from ...progress import progress as shown
from ...runtime.fastpath import FastPath, autocast
from ...runtime.kernel_trial import InferenceTrial, KernelTrial
from ...tasks.objective import loss_function
from ..parallel.distributed import DistContext

__all__ = ["evaluate", "evaluate_outputs", "outputs_of", "train_one_epoch", "tta_logits", "tta_warning"]


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    prep: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    label_smoothing: float = 0.0,
    class_weights: torch.Tensor | None = None,
    mix: Callable | None = None,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    dist_ctx: DistContext | None = None,
    progress: str | None = None,
    trial: KernelTrial | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    log: Callable[[str], None] | None = None,
) -> float:
    """One pass over ``loader``; returns the mean training loss (over all ranks).

    ``mix`` (timm's ``Mixup``) mixes each batch's images and trains on its soft targets.
    A batch whose loss is NaN or infinite ends the pass at once, before any step on it, and
    the non-finite loss is returned (with one process; ranks of a distributed run finish the
    pass together and return the NaN mean).

    With ``trial``, each step trains with the kernels (memory format, precision) the trial
    names and is timed for it, until it decides; the rest of the pass uses its decision.
    ``loss_fn(logits, targets)`` replaces the cross-entropy (several labels, numbers:
    :func:`~transferkit.tasks.objective.loss_function`).
    ``progress`` names the pass in its progress (:func:`~transferkit.progress.progress`, to ``log``).
    """
    model.train()
    single = dist_ctx is None or not dist_ctx.enabled
    step = partial(
        _step,
        model,
        optimizer=optimizer,
        device=device,
        scaler=scaler,
        class_weights=class_weights,
        label_smoothing=label_smoothing,
        stop_if_nonfinite=single,
        loss_fn=loss_fn,
    )
    timed = _TimedSteps(trial, model, optimizer, device) if trial is not None else None
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, count)
    for inputs, targets in loader if progress is None else shown(loader, progress, log):
        x, y, soft = _mixed(mix, prep(inputs), targets.to(device, non_blocking=True))
        if not len(y):
            continue
        value = step(x, y, soft, precision=precision) if timed is None else timed.step(step, x, y, soft)
        if not math.isfinite(value) and single:
            return value
        scheduler.step()
        total += torch.tensor([value * len(y), len(y)], dtype=torch.float64, device=device)
    if dist_ctx is not None:
        dist_ctx.all_reduce_sum(total)
    return (total[0] / total[1].clamp(min=1)).item()


def _mixed(mix: Callable | None, x: torch.Tensor, y: torch.Tensor):
    """The batch mixed by ``mix`` (timm mixes pairs: an odd batch leaves its last image out), with its soft targets
    (which carry the label smoothing); unmixed, with none."""
    if mix is None:
        return x, y, None
    even = len(y) - len(y) % 2
    if even == 0:
        return x[:0], y[:0], None
    x, soft = mix(x[:even], y[:even])
    return x, y[:even], soft


class _TimedSteps:
    """Steps under a kernel trial: each with the kernels (memory format, precision) the trial names, timed for it,
    until it decides; a candidate that cannot run is dropped and the step taken with the next."""

    def __init__(self, trial: KernelTrial, model: nn.Module, optimizer, device: torch.device):
        self.trial, self.model, self.optimizer, self.device = trial, model, optimizer, device
        self.kernels = None  # (channels_last, precision) set on the model

    def step(self, step: Callable, x: torch.Tensor, y: torch.Tensor, soft) -> float:
        trial = self.trial
        while True:
            timed = trial.next_option()
            wanted = timed or (trial.decided.channels_last, trial.decided.precision)
            if self.kernels is None or wanted[0] != self.kernels[0]:
                self.model.to(memory_format=KernelTrial.memory_format(wanted))
            self.kernels = wanted
            if timed is not None:
                _synchronize(self.device)
                started = time.perf_counter()
            batch = x.contiguous(memory_format=KernelTrial.memory_format(wanted))
            try:
                value = step(batch, y, soft, precision=wanted[1])
            except RuntimeError as e:
                if timed is None:
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                trial.drop(timed, e)
                continue
            if timed is not None and math.isfinite(value):
                _synchronize(self.device)
                trial.record(time.perf_counter() - started, len(y))
            return value


def _step(
    model,
    x,
    y,
    soft,
    optimizer,
    *,
    device,
    precision,
    scaler,
    class_weights,
    label_smoothing,
    stop_if_nonfinite,
    loss_fn=None,
) -> float:
    """Forward, backward and an optimizer step; the loss. A non-finite loss takes no step when ``stop_if_nonfinite``."""
    with autocast(device, precision):
        if soft is not None:
            loss = torch.sum(-soft * F.log_softmax(model(x).float(), dim=-1), dim=-1).mean()
        elif loss_fn is not None:
            loss = loss_fn(model(x), y)
        else:
            loss = F.cross_entropy(model(x), y, weight=class_weights, label_smoothing=label_smoothing)
    value = loss.item()
    if not math.isfinite(value) and stop_if_nonfinite:
        return value
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return value


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tta_warning(class_names: list[str]) -> str | None:
    """A note when flip TTA is likely wrong: classes named by digits, whose mirror images are no digits."""
    if all(name.strip().isdigit() for name in class_names):
        return "tta mirrors the images, but these classes are digits: a mirrored digit is another or none"
    return None


def tta_logits(model: nn.Module, x: torch.Tensor, *, tta: bool = False) -> torch.Tensor:
    """The model's float logits; with ``tta``, the log of the mean probability of ``x`` and its mirror image.

    A horizontal flip keeps the class of photos of cats or cars, not of digits or text: leave
    ``tta`` off for those.
    """
    logits = model(x).float()
    if not tta:
        return logits
    mirrored = model(x.flip(-1)).float()
    both = torch.stack([logits.log_softmax(-1), mirrored.log_softmax(-1)])
    return torch.logsumexp(both, 0) - math.log(2)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    num_classes: int,
    prep: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    precision: str = "fp32",
    dist_ctx: DistContext | None = None,
    outputs: bool = False,
    tta: bool = False,
    trial: InferenceTrial | None = None,
    progress: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Loss, accuracy and the confusion matrix (rows: true class, columns: predicted).

    With ``outputs``, also ``logits`` and ``probabilities`` (N, K) and ``targets`` (N,) on the CPU, in the
    loader's order (one process only). ``tta`` averages each image with its mirror image
    (:func:`tta_logits`). With ``trial``, its candidates' kernels and batch sizes run the first
    batches (set on ``model`` and ``prep``) until it decides, instead of ``precision``. ``progress`` as in
    :func:`train_one_epoch`.
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    kept_logits, kept_targets = [], []
    for inputs, targets in _batches(loader, model, prep, trial, progress, log):
        x, y = prep(inputs), targets.to(device)
        with autocast(device, precision) if trial is None else trial.autocast(device):
            logits = tta_logits(model, x, tta=tta)
        if outputs:
            kept_logits.append(logits.float().cpu())
            kept_targets.append(y.cpu())
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + logits.argmax(-1), minlength=num_classes**2).view(
            num_classes, num_classes
        )
    if dist_ctx is not None:
        dist_ctx.all_reduce_sum(loss_sum)
        dist_ctx.all_reduce_sum(confusion)
    count = confusion.sum().item()
    return {
        "loss": loss_sum.item() / max(count, 1),
        "accuracy": confusion.diag().sum().item() / max(count, 1),
        "count": count,
        "confusion": confusion.cpu(),
        **(
            {
                "logits": torch.cat(kept_logits),
                "probabilities": torch.cat(kept_logits).softmax(-1),
                "targets": torch.cat(kept_targets),
            }
            if outputs
            else {}
        ),
    }


def _batches(loader, model, prep, trial: InferenceTrial | None, progress: str | None, log):
    """An evaluation's batches: ``trial``'s while it times its candidates, shown as ``progress`` when named."""
    batches = loader if trial is None else trial.run(loader, model, prep)
    if progress is None:
        return batches
    return shown(batches, progress, log)  # its length where it has one (not a trial's, nor lockstep's)


@torch.no_grad()
def evaluate_outputs(
    model: nn.Module,
    loader: DataLoader,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    prep: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    precision: str = "fp32",
    trial: InferenceTrial | None = None,
    dist_ctx: DistContext | None = None,
    progress: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """The mean loss, and every output and target on the CPU in the loader's order: what the metrics of several
    labels per image or of numbers are computed from (:mod:`transferkit.tasks.metrics`). ``trial`` as in
    :func:`evaluate`. Under torchrun each rank evaluates its shard and every rank gets all outputs, in the
    dataset's order."""
    model.eval()
    loss_sum, kept_outputs, kept_targets = 0.0, [], []
    for inputs, targets in _batches(loader, model, prep, trial, progress, log):
        x, y = prep(inputs), targets.to(device)
        with autocast(device, precision) if trial is None else trial.autocast(device):
            outputs = model(x).float()
        if len(y):  # the empty batches of a rank in lockstep (DistContext.lockstep) have no mean loss
            loss_sum += float(loss_fn(outputs, y)) * len(y)
        kept_outputs.append(outputs.cpu())
        kept_targets.append(y.cpu())
    logits, targets = torch.cat(kept_outputs), torch.cat(kept_targets)
    if dist_ctx is not None and dist_ctx.enabled:
        total = dist_ctx.all_reduce_sum(torch.tensor([loss_sum], dtype=torch.float64, device=device))
        loss_sum = float(total[0])
        logits, targets = dist_ctx.gather_sharded(logits), dist_ctx.gather_sharded(targets)
    count = len(targets)
    return {"loss": loss_sum / max(count, 1), "count": count, "logits": logits, "targets": targets}


def outputs_of(
    model: nn.Module, dataset: ImageDataset, preprocessing: Preprocessing, fast: FastPath, task: str, outputs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and targets of ``model`` (on its device, with the kernels ``fast``) on every image of ``dataset``
    in its order: what a temperature is fitted on. ``outputs`` is the number of classes, labels or values."""
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=fast.inference_batch_size, num_workers=loader_workers(dataset))
    prep = BatchPrep(preprocessing, device, channels_last=fast.channels_last)
    if task == "classification":
        result = evaluate(
            model, loader, num_classes=outputs, prep=prep, device=device, precision=fast.precision, outputs=True
        )
    else:
        loss_fn = loss_function(task)
        result = evaluate_outputs(model, loader, loss_fn=loss_fn, prep=prep, device=device, precision=fast.precision)
    return result["logits"], result["targets"]
