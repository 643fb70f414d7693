"""Continuum Memory System (CMS) modules: a chain of residual MLP blocks, each on its own clock level.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §7.1 Eq 70-71. nlbench's definition is docs
nl-math.md section 4.2:

    y = MLP_K( ... MLP_2(MLP_1(x)) ),   MLP_l(h) = h + W2 GELU(W1 LN(h) + b1) + b2

Block l declares `clock_level = l` (fastest at the input side, nl-math.md 11 #6). These modules only
declare their levels: `nlbench.strategies.cms.wiring.wire_clocks` reads the `clock_level` attributes and
the ClockedOptimizer steps level l every C_l steps with the sum of its window's gradients (Eq 71).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nlbench.models.mlp import MLPConfig

__all__ = ["CMSBlock", "CMSSequential", "CMSMLPConfig", "CMSMLP", "cms_mlp_config", "cms_resnet"]


class CMSBlock(nn.Module):
    """One CMS memory block (nl-math.md 4.2): h + W2 GELU(W1 LN(h) + b1) + b2, on clock level `level`."""

    def __init__(self, dim: int, hidden: int, level: int = 0, norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.clock_level = level
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: Tensor) -> Tensor:  # (..., dim) -> (..., dim)
        return h + self.dropout(self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(h)))))


class CMSSequential(nn.Sequential):
    """Chain of K CMSBlocks, block l on clock level l (fastest at the input side, nl-math.md 11 #6).

    `hidden` is one width for every block or one per block. Used as a model body (CMSMLP), as the FFN of
    the Transformer (`ffn="cms"`) and inside every HOPE block.
    """

    def __init__(self, dim: int, hidden: int | Sequence[int], levels: int = 3, norm: bool = True,
                 dropout: float = 0.0) -> None:
        if levels < 1:
            raise ValueError(f"CMSSequential needs at least one level, got {levels}")
        widths = [hidden] * levels if isinstance(hidden, int) else list(hidden)
        if len(widths) != levels or min(widths) < 1 or dim < 1:
            raise ValueError(f"CMSSequential needs {levels} positive hidden widths, got {hidden!r}")
        super().__init__(*[CMSBlock(dim, w, level=i, norm=norm, dropout=dropout) for i, w in enumerate(widths)])
        self.dim = dim
        self.levels = levels


@dataclass(frozen=True)
class CMSMLPConfig:
    input_dim: int
    n_classes: int = 10
    width: int = 400
    levels: int = 3
    expansion: float = 1.0  # hidden width of each CMS block = round(expansion * width)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if min(self.input_dim, self.n_classes, self.width, self.levels) < 1 or self.expansion <= 0:
            raise ValueError(f"CMSMLPConfig needs positive sizes, got {self}")


class CMSMLP(nn.Module):
    """MLP-suite CMS backbone: Flatten -> Linear(input, width) -> GELU -> CMSSequential(width, K levels)
    -> LayerNorm -> `classifier`. The stem, the final norm and the head are on the fastest level."""

    def __init__(self, config: CMSMLPConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = nn.Linear(config.input_dim, config.width)
        self.cms = CMSSequential(config.width, max(1, round(config.expansion * config.width)), config.levels,
                                 dropout=config.dropout)
        self.norm = nn.LayerNorm(config.width)
        self.classifier = nn.Linear(config.width, config.n_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.nn.functional.gelu(self.stem(x.flatten(1)))  # (B, width)
        h = self.cms(h)  # (B, width)
        return self.classifier(self.norm(h))  # (B, n_classes)


def cms_mlp_config(mlp: MLPConfig, levels: int) -> CMSMLPConfig:
    """The CMSMLP that stands in for an MLP (nl-math.md 4.2): its first hidden width (the input width when
    it has none), its classes and dropout, `levels` blocks. `cms` builds this network, and `adam-matched`
    sizes its plain MLP to it, so both read it from here."""
    width = mlp.hidden[0] if mlp.hidden else mlp.input_dim
    return CMSMLPConfig(input_dim=mlp.input_dim, n_classes=mlp.n_classes, width=width, levels=levels,
                        dropout=mlp.dropout)


def cms_resnet(model: nn.Module, levels: int) -> nn.Module:
    """CMS-clocked ResNet stages: stage i of 4 on level round(i (K-1) / 3); stem and head fast. In place."""
    stages = [getattr(model, f"layer{i}") for i in range(1, 5)]
    for i, stage in enumerate(stages):
        stage.clock_level = round(i * (levels - 1) / (len(stages) - 1)) if levels > 1 else 0
    return model
