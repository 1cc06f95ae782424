"""Tiny models and constants the tests share."""

import torch
import torch.nn as nn


class TinyNet(nn.Module):
    """conv -> bn -> relu -> pool -> fc, small enough to build in every test."""

    def __init__(self, num_classes: int = 5, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)
        self.transferkit_input_size = (in_chans, 16, 16)

    def forward(self, x):
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


ALEXNET_HEAD = [f"classifier.{i}.{k}" for i in (1, 4, 6) for k in ("weight", "bias")]
