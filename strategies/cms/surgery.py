"""Backbone surgery for the `cms` and `hope` strategies: reach the backbone inside the runner's
task-scenario wrapper, swap it, and build the CMS version of a suite's default backbone (nl-math.md 4.2).

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §7.1 (a CMS replaces the MLP blocks of a
network by a chain of clocked MLP levels). The modules themselves are in `nlbench.models.cms`.
"""

from __future__ import annotations

from torch import nn

from nlbench.models.cms import CMSMLP, cms_mlp_config, cms_resnet
from nlbench.models.heads import replace_backbone, unwrap_backbone  # re-exported: hope imports them from here
from nlbench.models.mlp import MLP
from nlbench.models.resnet import ResNet18
from nlbench.models.transformer import TinyTransformer

__all__ = ["cms_variant", "replace_backbone", "unwrap_backbone"]


def cms_variant(backbone: nn.Module, levels: int) -> nn.Module:
    """The CMS version of a suite's default backbone (nl-math.md 4.2):
    MLP -> CMSMLP of the same width; ResNet-18 -> CMS-clocked stages; tiny Transformer -> CMS FFN;
    anything else (HOPE already has CMS; the small CNN) is returned as is (its clocks then come from
    `clock_level` attributes, or from depth)."""
    if isinstance(backbone, MLP):
        return CMSMLP(cms_mlp_config(backbone.config, levels))
    if isinstance(backbone, ResNet18):
        return cms_resnet(backbone, levels)
    if isinstance(backbone, TinyTransformer):
        return TinyTransformer(backbone.config.with_cms(levels))
    return backbone
