"""Backbones as plain `nn.Module`s, one file each, read like nanoGPT: a config dataclass, then the
modules in reading order. They import torch only; `nlbench.core.backbones` builds them by name."""

from nlbench.models.cms import CMSBlock, CMSMLP, CMSMLPConfig, CMSSequential, cms_resnet
from nlbench.models.cnn import SmallCNN, SmallCNNConfig
from nlbench.models.hope import (
    HopeBlock,
    HopeConfig,
    HopeLM,
    HopeLMConfig,
    HopeViT,
    HopeViTConfig,
    SelfModifyingMemory,
    chunked_delta_update,
    delta_rule_write,
)
from nlbench.models.mlp import MLP, MLPConfig
from nlbench.models.resnet import BasicBlock, ResNet18, ResNetConfig
from nlbench.models.transformer import TinyTransformer, TransformerConfig

__all__ = [
    "MLP", "MLPConfig", "ResNet18", "ResNetConfig", "BasicBlock", "SmallCNN", "SmallCNNConfig",
    "TinyTransformer", "TransformerConfig", "CMSBlock", "CMSSequential", "CMSMLP", "CMSMLPConfig", "cms_resnet",
    "HopeBlock", "HopeConfig", "HopeLM", "HopeLMConfig", "HopeViT", "HopeViTConfig", "SelfModifyingMemory",
    "chunked_delta_update", "delta_rule_write",
]
