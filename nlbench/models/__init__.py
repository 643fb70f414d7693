"""Backbones by name: ``build_backbone("reduced-resnet18", (3, 32, 32), 100, nf=32)``.

Every backbone ends in a Linear called ``classifier`` (code that swaps or grows the head finds
it by that name). ``input_shape`` is one sample's shape without the batch dimension: (C, H, W)
for images, or (H, W) for grayscale images such as 8x8 digits or 28x28 MNIST (one channel).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from nlbench.errors import UserError
from nlbench.models.cnn import SmallCNN, SmallCNNConfig
from nlbench.models.mlp import MLP, MLPConfig
from nlbench.models.resnet import BasicBlock, ResNet18, ResNetConfig
from nlbench.models.transformer import BACKBONE_ENTRIES as _SEQUENCE_BACKBONES

__all__ = [
    "BACKBONES",
    "build_backbone",
    "MLP",
    "MLPConfig",
    "ResNet18",
    "ResNetConfig",
    "BasicBlock",
    "SmallCNN",
    "SmallCNNConfig",
]


def _channels_and_size(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) or (H, W) -> (C, H, W), with C = 1 for (H, W)."""
    if len(input_shape) == 2:
        return (1, *input_shape)
    if len(input_shape) == 3:
        return tuple(input_shape)  # type: ignore[return-value]
    raise UserError(f"this backbone needs an image input_shape (C, H, W) or (H, W), got {input_shape}")


def _mlp(input_shape: tuple[int, ...], n_classes: int, **kw: Any) -> nn.Module:
    return MLP(MLPConfig(input_dim=math.prod(input_shape), n_classes=n_classes, **kw))


def _resnet(nf: int) -> Callable[..., nn.Module]:
    def build(input_shape: tuple[int, ...], n_classes: int, **kw: Any) -> nn.Module:
        c, _, _ = _channels_and_size(input_shape)
        return ResNet18(ResNetConfig(n_classes=n_classes, in_channels=c, **{"nf": nf, **kw}))

    return build


def _cnn(input_shape: tuple[int, ...], n_classes: int, **kw: Any) -> nn.Module:
    c, h, w = _channels_and_size(input_shape)
    if h != w:
        raise UserError(f"backbone 'cnn' needs square images, got input_shape {input_shape}")
    return SmallCNN(SmallCNNConfig(in_channels=c, n_classes=n_classes, image_size=h, **kw))


# name -> (description, builder, config class, config fields set from input_shape / n_classes)
_REGISTRY: dict[str, tuple[str, Callable[..., nn.Module], type, frozenset[str]]] = {
    "mlp": (
        "MLP, 2x400 ReLU hidden layers by default (Hsu et al. 2018; GEM/DER use 2x100)",
        _mlp, MLPConfig, frozenset({"input_dim", "n_classes"}),
    ),
    "reduced-resnet18": (
        "reduced ResNet-18 of GEM (Lopez-Paz & Ranzato 2017), nf=20, ~1.1M params",
        _resnet(20), ResNetConfig, frozenset({"in_channels", "n_classes"}),
    ),
    "resnet18": (
        "ResNet-18 with CIFAR stem as in DER/Mammoth (Buzzega et al. 2020), nf=64, ~11M params",
        _resnet(64), ResNetConfig, frozenset({"in_channels", "n_classes"}),
    ),
    "cnn": (
        "small VGG-style CNN: 2x(conv-conv-maxpool), widths 32/64, 256-unit hidden layer",
        _cnn, SmallCNNConfig, frozenset({"in_channels", "n_classes", "image_size"}),
    ),
}  # fmt: skip

_REGISTRY.update(_SEQUENCE_BACKBONES)

BACKBONES: dict[str, str] = {name: entry[0] for name, entry in _REGISTRY.items()}


def build_backbone(name: str, input_shape: tuple[int, ...], n_classes: int, **overrides: Any) -> nn.Module:
    """Build backbone ``name`` for samples of ``input_shape`` and ``n_classes`` outputs.

    ``overrides`` are fields of the backbone's config dataclass that the input shape and class
    count do not fix (``hidden``/``dropout`` for "mlp", ``nf`` for the ResNets, ``width`` for
    "cnn"). Raises ``UserError`` for an unknown name, an unknown or invalid override, or an
    input shape the backbone cannot take.
    """
    if name not in _REGISTRY:
        raise UserError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(_REGISTRY))}")
    _, builder, config_cls, derived = _REGISTRY[name]
    valid = [f.name for f in dataclasses.fields(config_cls) if f.name not in derived]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for backbone {name!r}; valid keys: {', '.join(valid)}"
        )
    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or any(d < 1 for d in input_shape):
        raise UserError(f"input_shape must be non-empty with positive sizes, got {input_shape}")
    if int(n_classes) < 1:
        raise UserError(f"n_classes must be positive, got {n_classes}")
    try:
        return builder(input_shape, int(n_classes), **overrides)
    except (ValueError, TypeError) as e:  # a config's own validation, e.g. dropout=1.5
        raise UserError(f"backbone {name!r}: {e}") from e
