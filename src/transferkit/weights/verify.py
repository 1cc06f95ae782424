"""Proof that loaded weights work: their BatchNorm statistics, and how natural photos meet them.

Two findings, each with its numbers:

* ``untrained_statistics``: BatchNorm layers whose running statistics are still a new layer's
  (mean 0, variance 1, no batches tracked): the file was never trained, or saved before it was.
* ``statistics_drift``: on scikit-image's sample photos, preprocessed as the weights expect,
  the input of each BatchNorm layer is compared with its running statistics. Trained weights
  and the right preprocessing keep it close; a wrong mean/std, 0-255 input, BGR order or
  another variant of the architecture move it. The score of a layer is the mean over its
  channels of ``|batch mean - running mean| / sqrt(running var)``; the finding names the
  first layer beyond :data:`DRIFT_WARN`, calibrated in BENCHMARKS.md ("Load verification").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .photos import sample_photos

__all__ = ["DRIFT_WARN", "norm_gap", "verify_weights"]

# First-layer drift beyond which the preprocessing or the variant is called wrong (BENCHMARKS.md).
DRIFT_WARN = 1.0


@dataclass
class _Layer:
    name: str
    module: nn.modules.batchnorm._BatchNorm


def verify_weights(
    model: nn.Module,
    preprocessing=None,
    *,
    photos: bool = True,
    source=None,
    report=None,
    trust_checkpoint: bool = False,
) -> dict:
    """``{"status", "findings", "drift", "variant"}`` for a model with weights loaded; status is ok or warn.

    Args:
        preprocessing: what the weights expect (:class:`~transferkit.data.preprocess.Preprocessing`);
            the model's own when None.
        photos: run the drift check on scikit-image's sample photos (needs scikit-image).
        source, report: the weights loaded and the :class:`~transferkit.weights.loading.LoadReport`
            of that load. With both, a load that mapped tensors by structure is compared with the
            file's own architecture on the photos (:func:`~transferkit.weights.identify.variant_check`).
    """
    layers = [_Layer(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    findings = []
    fresh = [layer.name for layer in layers if _untrained(layer.module)]
    if fresh:
        findings.append(
            {
                "kind": "untrained_statistics",
                "message": f"{len(fresh)} of {len(layers)} BatchNorm layers have the statistics of a new layer "
                f"(mean 0, variance 1, first: {fresh[0]}): the file was never trained, or saved before it was",
                "layers": len(fresh),
                "of": len(layers),
            }
        )
    drift = None
    if photos and layers and len(fresh) < len(layers):
        try:
            drift = statistics_drift(model, layers, preprocessing)
        except ImportError:  # the sample photos come with scikit-image (the data extra)
            drift = None
        beyond = [(name, score) for name, score in drift.items() if score > DRIFT_WARN]
        if beyond:
            name, score = beyond[0]
            findings.append(
                {
                    "kind": "statistics_drift",
                    "message": f"on natural photos the input of '{name}' is {score:.2f} running standard deviations "
                    f"from its running mean (over {DRIFT_WARN:g} means wrong preprocessing or another variant)",
                    "layer": name,
                    "score": score,
                    "threshold": DRIFT_WARN,
                }
            )
    variant = None
    if photos and source is not None and report is not None:
        from ..data.preprocess import Preprocessing
        from .identify import variant_check

        pre = preprocessing or Preprocessing.from_model(model)
        try:
            variant = variant_check(model, source, report, pre, trust_checkpoint=trust_checkpoint)
        except ImportError:
            variant = None
        if variant is not None and not variant["identical"]:
            findings.append(_variant_finding(variant, source))
    return {
        "status": "warn" if findings else "ok",
        "findings": findings,
        "drift": {"first": next(iter(drift.values()), None), "max": max(drift.values(), default=None)}
        if drift
        else None,
        "variant": variant,
    }


def _variant_finding(variant: dict, source) -> dict:
    """The warning for a structure-mapped load that computes something else than the file's own network."""
    if variant["native"] is not None:
        numbers = _numbers(variant)
        return {
            "kind": "other_implementation",
            "message": f"{source} was made for {variant['native']}; {variant['model'] or 'this model'} computes "
            f"differently with the same tensors: on {variant['photos']} photos its {numbers}. "
            f"Use {variant['native']} as MODEL",
            **{k: v for k, v in variant.items() if k != "identical"},
        }
    differing = [alt for alt in variant["alternatives"] if not alt["identical"]]
    first = differing[0]
    return {
        "kind": "other_implementation",
        "message": f"the names in {source} fit no timm or torchvision architecture, and {first['model']}, which has "
        f"the same shapes, computes differently: on {first['photos']} photos its {_numbers(first)}. "
        "Check which implementation the file was made for",
        "alternatives": variant["alternatives"],
    }


def _numbers(result: dict) -> str:
    text = f"{result['compared']} differ by up to {result['max_abs_diff']:.3g} (mean {result['mean_abs_diff']:.3g})"
    if "top1_agreement" in result:
        text += f", top-1 agreeing on {result['top1_agreement']} of {result['photos']}"
    return text


def _untrained(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    if bn.running_mean is None or bn.running_var is None:
        return False
    tracked = bn.num_batches_tracked
    return (
        bool((bn.running_mean == 0).all())
        and bool((bn.running_var == 1).all())
        and (tracked is None or int(tracked) == 0)
    )


@torch.no_grad()
def norm_gap(mean: torch.Tensor, bn: nn.Module) -> float:
    """How far the per-channel ``mean`` of a BatchNorm layer's input is from the running mean it keeps, in its
    running standard deviations, averaged over channels: the drift of weights or preprocessing, and the gap
    between the source's statistics and new images.

    Examples:
        >>> bn = nn.BatchNorm2d(2).eval()  # running mean 0, variance 1
        >>> round(norm_gap(torch.tensor([1.0, -3.0]), bn), 3)
        2.0
    """
    spread = (bn.running_var.float() + bn.eps).sqrt()
    return float(((mean.float() - bn.running_mean.float()).abs() / spread).mean())


def statistics_drift(model: nn.Module, layers: list[_Layer], preprocessing=None) -> dict[str, float]:
    """The drift score of each BatchNorm layer (in order) on the sample photos."""
    from ..data.preprocess import BatchPrep, Preprocessing, to_uint8_tensor

    pre = preprocessing or Preprocessing.from_model(model)
    images = torch.stack([to_uint8_tensor(img, pre) for img in sample_photos(pre.input_size[0])])  # (N, C, H, W)
    param = next(model.parameters())
    x = BatchPrep(pre, param.device, channels_last=False)(images).to(param.dtype)
    scores: dict[str, float] = {}

    def hook(name, bn):
        def record(module, inputs):
            value = inputs[0].float()
            dims = [d for d in range(value.dim()) if d != 1]
            scores[name] = norm_gap(value.mean(dims), bn)

        return record

    handles = [layer.module.register_forward_pre_hook(hook(layer.name, layer.module)) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {layer.name: scores[layer.name] for layer in layers if layer.name in scores}
