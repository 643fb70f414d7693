"""Backbones by name: ``build_backbone("reduced-resnet18", (3, 32, 32), 100, nf=32)``.

The catalogue (`BACKBONES`: name -> description) is importable without torch, so a bad `--backbone`
is answered before torch loads; `build_backbone` imports `nlbench.models` (plain nn.Modules) when it
builds. Every backbone ends in a Linear called ``classifier`` (code that swaps or grows the head finds
it by that name). ``input_shape`` is one sample's shape without the batch dimension: (C, H, W) for
images, (H, W) for grayscale images such as 8x8 digits or 28x28 MNIST (one channel), or (L,) for
token sequences.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from nlbench.errors import UserError

__all__ = ["BACKBONES", "build_backbone"]


def _models() -> Any:
    import nlbench.models as models

    return models


def _channels_and_size(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) or (H, W) -> (C, H, W), with C = 1 for (H, W)."""
    if len(input_shape) == 2:
        return (1, *input_shape)
    if len(input_shape) == 3:
        return tuple(input_shape)  # type: ignore[return-value]
    raise UserError(f"this backbone needs an image input_shape (C, H, W) or (H, W), got {input_shape}")


def _mlp(input_shape: tuple[int, ...], n_classes: int, **kw: Any) -> Any:
    m = _models()
    return m.MLP(m.MLPConfig(input_dim=math.prod(input_shape), n_classes=n_classes, **kw))


# nlbench.data.streams standardises Fashion-MNIST with these; Mammoth feeds its MLP [0, 1] pixels.
_FMNIST_MEAN_STD = (0.2860, 0.3530)


def _mlp_2x256(input_shape: tuple[int, ...], n_classes: int, **kw: Any) -> Any:
    # The size, the init and the raw-pixel input are the name: only dropout is left to choose.
    mean, std = _FMNIST_MEAN_STD
    return _mlp(input_shape, n_classes, hidden=(256, 256), init="xavier", input_mean=mean, input_std=std, **kw)


def _resnet(nf: int) -> Callable[..., Any]:
    def build(input_shape: tuple[int, ...], n_classes: int, **kw: Any) -> Any:
        c, _, _ = _channels_and_size(input_shape)
        m = _models()
        return m.ResNet18(m.ResNetConfig(n_classes=n_classes, in_channels=c, **{"nf": nf, **kw}))

    return build


def _cnn(input_shape: tuple[int, ...], n_classes: int, **kw: Any) -> Any:
    c, h, w = _channels_and_size(input_shape)
    if h != w:
        raise UserError(f"backbone 'cnn' needs square images, got input_shape {input_shape}")
    m = _models()
    return m.SmallCNN(m.SmallCNNConfig(in_channels=c, n_classes=n_classes, image_size=h, **kw))


# name -> (description, builder, config class name in nlbench.models, config fields set from input_shape / n_classes)
_REGISTRY: dict[str, tuple[str, Callable[..., Any], str, frozenset[str]]] = {
    "mlp": (
        "MLP, 2x400 ReLU hidden layers by default (Hsu et al. 2018; GEM/DER use 2x100)",
        _mlp, "MLPConfig", frozenset({"input_dim", "n_classes"}),
    ),
    "mlp-2x256": (
        "MLP 2x256 ReLU of Mammoth's seq-fmnist (MNISTMLP hidden_size=256, Buzzega et al. 2020): Xavier-uniform "
        "init, fed raw [0, 1] pixels (it undoes nlbench's Fashion-MNIST standardisation; for the fmnist suites)",
        _mlp_2x256, "MLPConfig", frozenset({"input_dim", "n_classes", "hidden", "init", "input_mean", "input_std"}),
    ),
    "reduced-resnet18": (
        "reduced ResNet-18 of GEM (Lopez-Paz & Ranzato 2017), nf=20, ~1.1M params",
        _resnet(20), "ResNetConfig", frozenset({"in_channels", "n_classes"}),
    ),
    "resnet18": (
        "ResNet-18 with CIFAR stem as in DER/Mammoth (Buzzega et al. 2020), nf=64, ~11M params",
        _resnet(64), "ResNetConfig", frozenset({"in_channels", "n_classes"}),
    ),
    "cnn": (
        "small VGG-style CNN: 2x(conv-conv-maxpool), widths 32/64, 256-unit hidden layer",
        _cnn, "SmallCNNConfig", frozenset({"in_channels", "n_classes", "image_size"}),
    ),
}  # fmt: skip


def sequence_length(input_shape: tuple[int, ...], name: str) -> int:
    if len(input_shape) != 1:
        raise UserError(f"backbone {name!r} needs a token-sequence input_shape (L,), got {input_shape}")
    return int(input_shape[0])


def _transformer(input_shape: tuple[int, ...], n_classes: int, **kw: Any) -> Any:
    m = _models()
    return m.TinyTransformer(m.TransformerConfig(vocab_size=n_classes, max_len=sequence_length(input_shape, "transformer"), **kw))


_REGISTRY.update({
    "transformer": (
        "tiny causal Transformer LM (d=64, 4 heads, 2 layers), clocks Q/K/V=1, O=8, FFN=64 (NL §5.1)",
        _transformer, "TransformerConfig", frozenset({"vocab_size", "max_len"}),
    ),
})  # fmt: skip

BACKBONES: dict[str, str] = {name: entry[0] for name, entry in _REGISTRY.items()}


def build_backbone(name: str, input_shape: tuple[int, ...], n_classes: int, **overrides: Any) -> Any:
    """Build backbone ``name`` for samples of ``input_shape`` and ``n_classes`` outputs.

    ``overrides`` are fields of the backbone's config dataclass that the input shape and class
    count do not fix (``hidden``/``dropout`` for "mlp", ``nf`` for the ResNets, ``width`` for
    "cnn"). Raises ``UserError`` for an unknown name, an unknown or invalid override, or an
    input shape the backbone cannot take.
    """
    if name not in _REGISTRY:
        raise UserError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(_REGISTRY))}")
    _, builder, config_name, derived = _REGISTRY[name]
    config_cls = getattr(_models(), config_name)
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
