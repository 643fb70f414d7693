"""A small VGG-style convolutional network: the cheap image backbone for quick runs.

Two blocks of [conv3x3 -> ReLU -> conv3x3 -> ReLU -> max-pool 2], widths w and 2w, then a
256-unit hidden layer and the ``classifier``. The conv layout (32-32-pool-64-64-pool) is that of
the Keras CIFAR-10 example network, which Zenke, Poole & Ganguli ("Continual Learning Through
Synaptic Intelligence", ICML 2017) use for Split CIFAR-10/100; theirs adds dropout and has its
own dense width, so this is "SI-like", not a reproduction. The convolutions are padded
(padding 1), so only the pools shrink the image: the flatten size is 2w * (image_size // 4)^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class SmallCNNConfig:
    in_channels: int = 3
    n_classes: int = 10
    width: int = 32  # channels of the first block; the second block has 2 * width
    image_size: int = 32  # side of the square input; 28 for MNIST, 32 for CIFAR

    def __post_init__(self) -> None:
        if min(self.in_channels, self.n_classes, self.width) < 1:
            raise ValueError(f"SmallCNNConfig needs positive sizes, got {self}")
        if self.image_size < 4:
            raise ValueError(f"SmallCNNConfig.image_size must be >= 4 (two 2x pools), got {self.image_size}")

    @property
    def flat_dim(self) -> int:
        """Features entering the hidden Linear: 2w channels on an (image_size // 4)^2 grid."""
        return 2 * self.width * (self.image_size // 4) ** 2


class SmallCNN(nn.Module):
    """conv-conv-pool x2 (widths w, 2w) -> Linear(., 256) -> ReLU -> ``classifier``."""

    def __init__(self, config: SmallCNNConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config.in_channels, config.width
        self.features = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.hidden = nn.Sequential(nn.Linear(config.flat_dim, 256), nn.ReLU())
        self.classifier = nn.Linear(256, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (B, H, W) grayscale -> (B, 1, H, W)
            x = x.unsqueeze(1)
        x = self.features(x)  # (B, 2w, S/4, S/4) with S = image_size
        x = x.flatten(1)  # (B, flat_dim)
        x = self.hidden(x)  # (B, 256)
        return self.classifier(x)  # (B, n_classes)
