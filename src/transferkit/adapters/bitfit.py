"""BitFit (Ben Zaken et al., 2022): train only the biases, optionally the normalisation affines, and the head."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["bitfit_parameters"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def bitfit_parameters(model: nn.Module, head: str, *, norms: bool = False) -> list[str]:
    """Names of the parameters BitFit trains: every bias, the head's weights, and with ``norms`` the norm layers'.

    Examples:
        >>> bitfit_parameters(torchvision.models.resnet18(), "fc")[:2]
        ['bn1.bias', 'layer1.0.bn1.bias']
    """
    norm_params = set()
    if norms:
        for path, module in model.named_modules():
            if isinstance(module, _NORMS) or "Norm" in type(module).__name__:
                norm_params.update(f"{path}.{n}" if path else n for n, _ in module.named_parameters(recurse=False))
    return [
        name
        for name, _ in model.named_parameters()
        if name.rsplit(".", 1)[-1] == "bias" or name.startswith(head + ".") or name in norm_params
    ]
