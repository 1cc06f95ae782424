"""Class imbalance: decided from the training set's counts, applied as a sampler or loss weights."""

from __future__ import annotations

import torch

from ...errors import ConfigError
from ...tasks.objective import positive_weights
from ...tasks.scores import TASK_MONITORS, imbalance
from ..config import IMBALANCED
from ..folder.run_folder import RunRecord
from ..parallel.distributed import DistContext

__all__ = ["choose_balance", "class_weights", "sample_weights"]


def choose_balance(record: RunRecord, state: dict | None, log, *, distributed: bool = False) -> None:
    """Decide ``auto`` balance and monitor from the training set's class counts (a resumed run keeps its own).

    On imbalanced data auto samples each class equally often: on digits with half the classes
    cut to 10%, test balanced accuracy was 89% with the sampler, 80% with the weighted loss and
    50% with neither; cut to 45% (a ratio of 2.4), 96.5%, 96.7% and 88.8% (means of 3 seeds,
    BENCHMARKS.md). torchrun shards by DistributedSampler,
    so there auto weights the loss instead.
    """
    config = record.config
    if state is not None and "balance" in state:
        record.balance, record.monitor = state["balance"], state["monitor"]
        return
    task = record.data.task
    if task != "classification":  # labels or numbers: nothing is sampled; weighted weighs each label's positives
        record.balance = "weighted" if config.balance == "weighted" else "none"
        record.monitor = config.monitor if config.monitor != "auto" else TASK_MONITORS[task][0]
        log(f"task {task}: balance {record.balance}, best checkpoint by {record.monitor}")
        return
    ratio = imbalance(list(record.data.class_counts["train"].values()))
    imbalanced = ratio > IMBALANCED
    mixing = config.mixup > 0 or config.cutmix > 0
    # torchrun shards with its own sampler, webdataset draws streamed shards; mixed targets exclude the weighted loss.
    drawn_elsewhere = distributed or config.stream
    chosen = ("sampler" if not drawn_elsewhere else "none" if mixing else "weighted") if imbalanced else "none"
    record.balance = config.balance if config.balance != "auto" else chosen
    record.monitor = config.monitor if config.monitor != "auto" else ("balanced_acc" if imbalanced else "acc")
    if config.balance == "auto" or config.monitor == "auto":
        log(
            f"classes {'imbalanced' if imbalanced else 'balanced'} (largest over smallest {ratio:.1f}): "
            f"balance {record.balance}, best checkpoint by {record.monitor}"
        )


def class_weights(record: RunRecord, device: torch.device) -> torch.Tensor | None:
    """Cross-entropy weights N / (K * n_c), as scikit-learn's 'balanced', when balance is weighted.

    For several labels per image: each label's positive weight, negatives over positives."""
    if record.balance != "weighted":
        return None
    if record.data.task == "multi-label":
        return positive_weights(record.data.train.decoded.labels).to(device)
    counts = torch.tensor(list(record.data.class_counts["train"].values()), dtype=torch.float32)
    weights = counts.sum() / (len(counts) * counts.clamp(min=1))
    return weights.to(device)


def sample_weights(record: RunRecord, dist_ctx: DistContext) -> torch.Tensor | None:
    """Per-image sampling weights 1 / n_c, when balance is sampler: each class drawn equally often."""
    if record.balance != "sampler":
        return None
    if dist_ctx.enabled:
        raise ConfigError("balance sampler does not combine with torchrun; use balance weighted.", argument="balance")
    labels = record.data.train.decoded.labels
    counts = torch.bincount(labels, minlength=len(record.data.class_names)).clamp(min=1)
    return (1.0 / counts.double())[labels]
