"""A fine-tuning loop written the way tutorials write it: the baseline the benchmarks compare against.

float32, NCHW, images decoded and transformed by torchvision every epoch, the frozen layers
recomputed every epoch. It is a correct loop (frozen BatchNorm kept in eval mode, only trainable
parameters in the optimizer, the same schedule, label smoothing and zero-initialised head as
transferkit) so that accuracies can be compared.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


class TutorialDataset(Dataset):
    def __init__(self, items, size, crop_pct, mean, std):
        self.items = items
        self.transform = T.Compose(
            [
                T.Resize(round(size / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(size),
                T.ToTensor(),
                T.Normalize(mean, std),
            ]
        )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        img = (
            Image.open(item.path).convert("RGB")
            if item.path is not None
            else Image.fromarray(item.array).convert("RGB")
        )
        return self.transform(img), item.label


def plain_fit(
    model,
    train_items,
    val_items,
    *,
    pre,
    epochs,
    lr,
    train_only=None,
    batch_size=64,
    seed=0,
    label_smoothing=0.1,
    weight_decay=0.01,
    warmup_fraction=0.1,
    target=None,
    stop_after=None,
):
    """Train and evaluate every epoch; returns per-epoch (val_acc, cumulative seconds), and seconds to ``target``.

    ``train_items`` and ``val_items`` are transferkit's items (read through a torchvision transform of
    ``pre``), or Datasets of (tensor, label) used as they are. ``stop_after`` ends after that many
    epochs of the ``epochs``-long schedule.
    """
    torch.manual_seed(seed)
    size = pre.input_size[1] if pre is not None else None

    def as_set(items):
        return items if isinstance(items, Dataset) else TutorialDataset(items, size, pre.crop_pct, pre.mean, pre.std)

    train, val = as_set(train_items), as_set(val_items)
    head = model.get_classifier() if hasattr(model, "get_classifier") else model.fc
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    if train_only is not None:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(train_only)
    frozen_bn = [
        m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters())
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    loader = DataLoader(
        train, batch_size=batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed)
    )
    total = len(loader) * epochs
    warmup = max(1, int(total * warmup_fraction))

    def schedule(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history, reached = [], None
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for m in frozen_bn:
            m.eval()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        correct = count = 0
        with torch.no_grad():
            for x, y in DataLoader(val, batch_size=256):
                correct += (model(x).argmax(1) == y).sum().item()
                count += len(y)
        seconds = time.perf_counter() - started
        history.append((correct / count, seconds))
        if target is not None and reached is None and correct / count >= target:
            reached = seconds
            break
        if stop_after is not None and len(history) >= stop_after:
            break
    return history, reached
