"""The HOPE backbone for a suite: HopeLM for a token-sequence suite, HopeViT for an image suite, with the
sizes of nl-math.md 9.4 unless the `hope` strategy's hyperparameters override them.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §8.3 (Hope). The modules are in
`nlbench.models.hope`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nlbench.models.hope import HopeLM, HopeLMConfig, HopeViT, HopeViTConfig

__all__ = ["hope_for_suite"]


def _vit_defaults(image_size: int) -> dict[str, Any]:
    """nl-math.md 9.4 sizes for 32x32 images (d=128, 4 layers, 64 patches, chunk 8); smaller inputs
    (28x28 -> 7x7 patches, 8x8 -> 2x2) get 16 patches, d=64, 2 layers, chunk 4 (a few CPU minutes)."""
    if image_size >= 32:
        return {"d_model": 128, "n_layers": 4, "chunk": 8}
    return {"d_model": 64, "n_layers": 2, "chunk": 4}


def hope_for_suite(suite: Any, *, chunk: int = 0, d_model: int = 0, n_layers: int = 0, **options: Any) -> nn.Module:
    """HopeLM for a sequence suite, HopeViT for an image suite. `chunk`, `d_model`, `n_layers`: 0 keeps the
    default for the suite; `options`: other HopeConfig fields (eta_max, cms_levels, ...)."""
    overrides = {k: v for k, v in (("chunk", chunk), ("d_model", d_model), ("n_layers", n_layers)) if v}
    overrides.update(options)
    if getattr(suite, "kind", "image") == "sequence":
        return HopeLM(HopeLMConfig(vocab_size=suite.n_classes, max_len=suite.input_shape[0], **overrides))
    shape = tuple(suite.input_shape)
    c, s = (1, shape[0]) if len(shape) == 2 else (shape[0], shape[1])
    return HopeViT(HopeViTConfig(in_channels=c, image_size=s, n_classes=suite.n_classes,
                                 **{**_vit_defaults(s), **overrides}))
