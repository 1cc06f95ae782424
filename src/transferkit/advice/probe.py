"""How far the pretrained features carry a new task, measured at several depths in one forward pass.

At the end of each stage of the backbone (the stages ``--unfreeze-last`` counts; at most
:data:`MAX_DEPTHS`, the last always the head's input) the activations are pooled to one vector
per image and kept. A linear probe (multinomial logistic regression, LBFGS to convergence on
standardised features) is fitted on the training images' vectors at each depth and scored on the
held-out ones by accuracy. Several labels per image are probed by a logistic regression per label
(fitted together the same way) and scored by macro mAP; numbers by ridge regression (its penalty chosen by
efficient leave-one-out) and scored by R² (:func:`task_probe`). In the same pass, each BatchNorm
layer's input on the new data is compared with its running statistics: how far the new images
are from the ones the weights were trained on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.freeze import stages
from ..model.surgery import find_head
from ..progress import progress as shown
from ..tasks.metrics import macro_map
from ..weights.verify import norm_gap

__all__ = ["MAX_DEPTHS", "PROBE_SCORES", "Depth", "depth_points", "extract", "linear_probe", "task_probe"]

MAX_DEPTHS = 6
PROBE_SCORES = {"classification": "accuracy", "multi-label": "mAP", "regression": "R²"}  # what "score" is


@dataclass
class Depth:
    """A point where activations are taken: after ``stage`` (an index into :func:`stages`)."""

    name: str  # the module whose output is taken, or "head input"
    stage: int
    stages_after: int  # stages from here to the output, the head included: --unfreeze-last for this depth


def _block(paths: list[str]) -> str:
    """The module holding a whole stage (``layer1`` for ``layer1.0.conv1`` ... ``layer1.1.bn2``), else its last."""
    parts = [p.split(".") for p in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common) if common else paths[-1]


def _runs(model: nn.Module, path: str) -> str:
    """``path``, or its last block when it is a container that is never called (a SwinV2 stage's ``blocks`` list)."""
    module = model.get_submodule(path)
    while isinstance(module, nn.ModuleList | nn.ModuleDict) and len(module):
        name = list(module._modules)[-1]
        path, module = f"{path}.{name}", module[name] if isinstance(module, nn.ModuleDict) else module[-1]
    return path


def depth_points(model: nn.Module) -> list[Depth]:
    """Up to :data:`MAX_DEPTHS` stage ends from input to output; the deepest is the head's input.

    Examples:
        >>> [d.name for d in depth_points(create_model("resnet18", num_classes=3))]
        ['conv1', 'layer1', 'layer2', 'layer3', 'head input']
    """
    all_stages = stages(model)
    body = all_stages[:-1]  # the last stage is the head
    points = [Depth(_runs(model, _block(paths)), i, len(all_stages) - i - 1) for i, paths in enumerate(body)]
    if not points:
        return [Depth("head input", 0, 1)]
    last = points[-1]
    points[-1] = Depth("head input", last.stage, last.stages_after)
    if len(points) > MAX_DEPTHS:  # evenly spaced, the deepest kept
        step = (len(points) - 1) / (MAX_DEPTHS - 1)
        points = [points[round(i * step)] for i in range(MAX_DEPTHS)]
    return points


def _pool(value: torch.Tensor, nhwc: bool = False) -> torch.Tensor:
    value = value.float()
    if value.dim() == 4:  # (N, C, H, W), or (N, H, W, C) in the stages of a Swin (timm's output_fmt "NHWC")
        return value.mean((1, 2)) if nhwc else value.mean((2, 3))
    if value.dim() == 3:  # (N, L, C) tokens
        return value.mean(1)
    return value.flatten(1)


@torch.no_grad()
def extract(
    model: nn.Module,
    images: torch.Tensor,
    prep,
    points: list[Depth],
    *,
    batch_size: int = 64,
    progress: str | None = None,
    log=None,
) -> tuple[dict[str, torch.Tensor], dict[int, float], float]:
    """Pooled features at each depth (N, C), each stage's statistics gap, and the images per second.

    ``progress`` names the pass in its progress, shown to ``log`` (:func:`~transferkit.progress.progress`).

    The gap of a BatchNorm layer is the mean over channels of ``|mean - running mean| /
    sqrt(running var)`` of its input on these images; a stage's is the mean over its layers.
    """
    kept: dict[str, list[torch.Tensor]] = {p.name: [] for p in points}
    nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
    sums: dict[str, list] = {}
    handles = []
    calls = [0]  # the head's calls in this forward: a distilled model's tied heads call it twice

    def head_input(module, inputs):
        calls[0] += 1
        if calls[0] == 1:
            kept["head input"].append(_pool(inputs[0]))

    handles.append(model.register_forward_pre_hook(lambda m, i: calls.__setitem__(0, 0)))
    for point in points:
        if point.name == "head input":
            handles.append(model.get_submodule(find_head(model)).register_forward_pre_hook(head_input))
        else:
            module = model.get_submodule(point.name)
            handles.append(module.register_forward_hook(lambda m, i, o, n=point.name: kept[n].append(_pool(o, nhwc))))
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for name, bn in norms.items():
        if bn.running_mean is None:
            continue

        def record(module, inputs, name=name):
            value = inputs[0].float()
            dims = [d for d in range(value.dim()) if d != 1]
            total = sums.setdefault(name, [0.0, 0])
            total[0] = total[0] + value.sum(dims)
            total[1] += value.numel() // value.shape[1]

        handles.append(bn.register_forward_pre_hook(record))
    model.eval()
    started = time.perf_counter()
    try:
        starts = range(0, len(images), batch_size)
        for start in starts if progress is None else shown(starts, progress, log):
            model(prep(images[start : start + batch_size]))
    finally:
        for handle in handles:
            handle.remove()
    seconds = time.perf_counter() - started
    gaps: dict[str, float] = {}
    for name, (total, count) in sums.items():
        bn = norms[name]
        mean = total / max(count, 1)
        gaps[name] = norm_gap(mean, bn)
    stage_gap = _stage_gaps(model, gaps)
    features = {name: torch.cat(chunks) for name, chunks in kept.items()}
    return features, stage_gap, len(images) / max(seconds, 1e-9)


def _stage_gaps(model: nn.Module, gaps: dict[str, float]) -> dict[int, float]:
    result = {}
    for index, paths in enumerate(stages(model)):
        inside = [v for n, v in gaps.items() if any(n == p or n.startswith(p + ".") for p in paths)]
        if inside:
            result[index] = sum(inside) / len(inside)
    return result


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    *,
    l2: float = 1e-4,
    max_iter: int = 300,
) -> dict:
    """Held-out accuracy and balanced accuracy of a multinomial logistic regression, and its seconds.

    Features are standardised with the training set's mean and spread; the weights are fitted
    by LBFGS on the mean cross-entropy plus ``l2`` times their squared norm.
    """
    from sklearn.metrics import balanced_accuracy_score

    started = time.perf_counter()
    predicted = _linear_fit(train_x, train_y, val_x, num_classes, F.cross_entropy, l2, max_iter).argmax(1)
    accuracy = float((predicted == val_y).double().mean())
    return {
        "score": accuracy,
        "accuracy": accuracy,
        "balanced_accuracy": float(balanced_accuracy_score(val_y.numpy(), predicted.numpy())),
        "seconds": time.perf_counter() - started,
    }


def _linear_fit(train_x, train_y, val_x, outputs: int, loss, l2: float, max_iter: int) -> torch.Tensor:
    """The held-out logits of a linear model fitted by LBFGS on standardised features: ``loss`` plus ``l2`` times
    the squared weights."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    x, vx = (train_x - mean) / std, (val_x - mean) / std
    weight = torch.zeros(x.shape[1], outputs, requires_grad=True)
    bias = torch.zeros(outputs, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-5, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        value = loss(x @ weight + bias, train_y) + l2 * weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        return vx @ weight + bias


def task_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, task: str
) -> dict:
    """The held-out ``score`` of a linear model of several labels (macro mAP) or of a number (R², with MAE).

    Several labels: a logistic regression per label, fitted together by LBFGS on the mean binary
    cross-entropy (as :func:`linear_probe` fits the classes'). A number: ``RidgeCV`` over penalties
    1e-2 to 1e4, on standardised features and target.
    """
    started = time.perf_counter()
    if task == "multi-label":  # every label's logistic regression at once, as the classes' probe fits them
        y = train_y.float()
        logits = _linear_fit(train_x, y, val_x, y.shape[1], F.binary_cross_entropy_with_logits, 1e-4, 300)
        score = macro_map(val_y.numpy().astype(np.int64), torch.sigmoid(logits).numpy())
        return {"score": score, "map": score, "seconds": time.perf_counter() - started}
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x.double().numpy())
    x, vx = scaler.transform(train_x.double().numpy()), scaler.transform(val_x.double().numpy())
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_absolute_error, r2_score

    y, vy = train_y.double().numpy(), val_y.double().numpy()
    mean, std = y.mean(), y.std() or 1.0
    fitted = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(x, (y - mean) / std)
    predicted = fitted.predict(vx) * std + mean
    return {
        "score": float(r2_score(vy, predicted)),
        "r2": float(r2_score(vy, predicted)),
        "mae": float(mean_absolute_error(vy, predicted)),
        "seconds": time.perf_counter() - started,
    }
