"""ResNet-18 for small images, in the continual-learning variant of GEM.

Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning" (NeurIPS 2017) use a
"reduced ResNet-18" on CIFAR-100: the ResNet-18 of He et al. ("Deep Residual Learning for
Image Recognition", CVPR 2016) with three times fewer filters per layer (nf=20 instead of 64)
and the CIFAR-style stem (one 3x3 stride-1 conv, no max-pool). DER (Buzzega et al., "Dark
Experience for General Continual Learning", NeurIPS 2020) and its Mammoth library use the same
network with the full width nf=64.

Differences from the GEM code: the input is not reshaped to 3x32x32 (``in_channels`` is a
config field) and the final pooling is adaptive, so 28x28 1-channel (and 8x8) inputs work too;
on 32x32 inputs adaptive pooling equals GEM's ``avg_pool2d(out, 4)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ResNetConfig:
    n_classes: int = 10
    nf: int = 20  # width of the first stage; stages are nf, 2nf, 4nf, 8nf (GEM: 20, He et al.: 64)
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.n_classes < 1 or self.nf < 1 or self.in_channels < 1:
            raise ValueError(f"ResNetConfig needs positive sizes, got {self}")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()  # identity when the shape is unchanged
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/stride, W/stride)
        out = self.bn2(self.conv2(out))  # same shape
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with the CIFAR stem; GEM's reduced version when nf=20."""

    num_blocks = (2, 2, 2, 2)
    strides = (1, 2, 2, 2)

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.nf
        self.conv1 = conv3x3(config.in_channels, nf)  # stem: stride 1, no max-pool
        self.bn1 = nn.BatchNorm2d(nf)
        in_planes = nf
        stages = []
        for i, (n, stride) in enumerate(zip(self.num_blocks, self.strides)):
            planes = nf * 2**i
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.classifier = nn.Linear(8 * nf, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (B, H, W) grayscale -> (B, 1, H, W)
            x = x.unsqueeze(1)
        out = F.relu(self.bn1(self.conv1(x)))  # (B, nf, H, W)
        out = self.layer1(out)  # (B, nf, H, W)
        out = self.layer2(out)  # (B, 2nf, H/2, W/2)
        out = self.layer3(out)  # (B, 4nf, H/4, W/4)
        out = self.layer4(out)  # (B, 8nf, H/8, W/8): 4x4 for 32x32, 4x4 for 28x28, 1x1 for 8x8
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 8nf)
        return self.classifier(out)  # (B, n_classes)
