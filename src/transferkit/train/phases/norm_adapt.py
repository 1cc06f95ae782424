"""BatchNorm statistics re-estimated on the new images before a head phase that a phase training everything follows.

gradual and lp-ft train the head first on frozen features, then every layer. Frozen BatchNorm
normalises by the source's running statistics; training BatchNorm by the batch's. Re-estimating
the running statistics on the training images first (AdaBN, Li et al. 2016; torch's
``swa_utils.update_bn``) makes the head learn on the features the later phase starts from.
"""

from __future__ import annotations

import itertools
import math
import time

import torch.nn as nn

from ..config import TrainConfig
from ..strategies import Phase

__all__ = ["ADAPT_IMAGES", "adapt_norm_statistics", "adapts_norms_first"]

ADAPT_IMAGES = 2048  # enough images for stable means and variances; a pass over more costs time for nothing


def adapts_norms_first(config: TrainConfig, phase: Phase, model: nn.Module) -> bool:
    """A head phase followed by one that trains every layer, whose BatchNorm then normalises by batch statistics.

    The head would otherwise learn on features normalised by the source's running statistics,
    and the first epoch that trains everything starts from features it was not trained on: lite0
    on 1,000 mnist5k images (gradual, 3 epochs, 64 px) fell from 83.2% after the head to 78.4%;
    with the statistics re-estimated first it went 68.2%, 84.9%, 88.6% (BENCHMARKS.md).
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    later = config.phases()
    first = later[0].name == phase.name
    return phase.trains == "head" and first and any(p.trains == "all" for p in later[1:])


def adapt_norm_statistics(model: nn.Module, dataset, prep, *, limit: int = ADAPT_IMAGES, batch_size: int = 64) -> float:
    """Re-estimate every BatchNorm's running statistics on ``limit`` images of ``dataset`` (AdaBN); the seconds taken.

    torch's ``swa_utils.update_bn`` averages the batch statistics of one pass without gradients.
    """
    from torch.optim.swa_utils import update_bn
    from torch.utils.data import DataLoader

    started = time.perf_counter()
    transform = getattr(dataset, "transform", None)
    if transform is not None:
        dataset.transform = None  # the images as they are: the same statistics every time
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        batches = math.ceil(min(len(dataset), limit) / batch_size)
        update_bn((prep(images) for images, _ in itertools.islice(loader, batches)), model)
    finally:
        if transform is not None:
            dataset.transform = transform
    return time.perf_counter() - started
