"""Backbones: output shapes, exact parameter counts, the ``classifier`` head, gradients, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nlbench.errors import UserError
from nlbench.core.backbones import BACKBONES, build_backbone
from nlbench.models import (
    MLP,
    MLPConfig,
    ResNet18,
    ResNetConfig,
    SmallCNN,
    SmallCNNConfig,
)

B = 3
# one sample's shape -> a batch of it; covers MNIST (with and without channel), CIFAR, 8x8 digits
SHAPES = [(1, 28, 28), (28, 28), (3, 32, 32), (8, 8)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet18_params(nf: int, c: int, k: int) -> int:
    """Closed form for the parameter count of ResNet18(nf, in_channels=c, n_classes=k).

    3x3 convs (no bias): stage i has width w_i = 2^i nf and, over its two blocks, three
    w_i x w_i convs plus one w_{i-1} x w_i conv (w_{-1} = nf): 27 w_i^2 + 9 w_{i-1} w_i, i.e.
    (27+9) + (108+18) + (432+72) + (1728+288) = 2682 nf^2.
    1x1 projection shortcuts (stages 1..3): (2 + 8 + 32) nf^2 = 42 nf^2.  -> 2724 nf^2
    BatchNorm (weight + bias per channel): stem nf, stage 0 four BNs of nf, stages 1..3 five BNs
    (four + shortcut) of 2nf, 4nf, 8nf: (1 + 4 + 10 + 20 + 40) nf = 75 nf channels -> 150 nf.
    Stem conv 9 c nf; classifier 8 nf k + k.
    """
    return 2724 * nf**2 + (150 + 9 * c + 8 * k) * nf + k


# ---------------------------------------------------------------------------- output shapes


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["mlp", "reduced-resnet18", "cnn"])
def test_output_shape(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_backbone(name, shape, n_classes=7)
    out = model(torch.randn(B, *shape))
    assert out.shape == (B, 7)
    assert torch.isfinite(out).all()


def test_full_resnet18_on_cifar_shape() -> None:
    model = build_backbone("resnet18", (3, 32, 32), n_classes=100).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_mlp_accepts_flat_input() -> None:
    model = build_backbone("mlp", (784,), n_classes=10)
    assert model(torch.randn(B, 784)).shape == (B, 10)
    assert model(torch.randn(B, 1, 28, 28)).shape == (B, 10)  # any shape with 784 features


def test_mlp_rejects_wrong_feature_count() -> None:
    model = build_backbone("mlp", (28, 28), n_classes=10)
    with pytest.raises(ValueError, match="784"):
        model(torch.randn(B, 3, 32, 32))


# ---------------------------------------------------------------------------- parameter counts


def test_mlp_784_400_400_10_params() -> None:
    model = build_backbone("mlp", (1, 28, 28), n_classes=10)
    # (784*400 + 400) + (400*400 + 400) + (400*10 + 10) = 314000 + 160400 + 4010
    assert n_params(model) == 478_410


def test_mlp_hidden_override_params() -> None:
    model = build_backbone("mlp", (28, 28), n_classes=10, hidden=[100, 100])  # GEM/DER size
    assert n_params(model) == (784 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)  # 89,610


def test_reduced_resnet18_params() -> None:
    model = build_backbone("reduced-resnet18", (3, 32, 32), n_classes=10)
    # 2724*20^2 + (150 + 27 + 80)*20 + 10 = 1,089,600 + 5,140 + 10
    assert n_params(model) == 1_094_750
    assert resnet18_params(20, 3, 10) == 1_094_750


def test_resnet18_params_match_the_known_cifar_resnet18_count() -> None:
    # the CIFAR ResNet-18 (kuangliu/pytorch-cifar, Mammoth) has 11,173,962 parameters for 10 classes
    assert resnet18_params(64, 3, 10) == 11_173_962
    model = build_backbone("resnet18", (3, 32, 32), n_classes=10)
    assert n_params(model) == 11_173_962


@pytest.mark.parametrize("nf,c,k", [(20, 1, 10), (8, 3, 100), (5, 1, 2)])
def test_resnet18_params_closed_form(nf: int, c: int, k: int) -> None:
    model = ResNet18(ResNetConfig(n_classes=k, nf=nf, in_channels=c))
    assert n_params(model) == resnet18_params(nf, c, k)


def test_small_cnn_params() -> None:
    model = build_backbone("cnn", (3, 32, 32), n_classes=10)
    expected = (
        (3 * 32 * 9 + 32) + (32 * 32 * 9 + 32)  # block 1 convs
        + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64)  # block 2 convs
        + (64 * 8 * 8 * 256 + 256)  # hidden: 32 / 4 = 8
        + (256 * 10 + 10)  # classifier
    )  # fmt: skip
    assert n_params(model) == expected == 1_116_970
    assert SmallCNNConfig(in_channels=1, image_size=28).flat_dim == 64 * 7 * 7


# ---------------------------------------------------------------------------- head, gradients


IMAGE_BACKBONES = sorted(set(BACKBONES) - {"transformer"})


@pytest.mark.parametrize("name", IMAGE_BACKBONES)
def test_classifier_is_the_last_linear(name: str) -> None:
    model = build_backbone(name, (3, 32, 32), n_classes=5)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert isinstance(model.classifier, nn.Linear)
    assert linears[-1] is model.classifier
    assert model.classifier.out_features == 5


@pytest.mark.parametrize(
    "model,shape",
    [
        (MLP(MLPConfig(input_dim=64, hidden=(16, 16), dropout=0.1)), (8, 8)),
        (ResNet18(ResNetConfig(nf=4, in_channels=1)), (1, 28, 28)),
        (ResNet18(ResNetConfig(nf=4)), (3, 32, 32)),
        (SmallCNN(SmallCNNConfig(width=4)), (3, 32, 32)),
        (SmallCNN(SmallCNNConfig(in_channels=1, width=4, image_size=28)), (28, 28)),
    ],
    ids=["mlp", "resnet-28x28x1", "resnet-32x32x3", "cnn-32x32x3", "cnn-28x28"],
)
def test_backward_reaches_every_parameter(model: nn.Module, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, *shape)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------- build_backbone


def test_backbones_table() -> None:
    assert set(BACKBONES) == {"mlp", "mlp-2x256", "reduced-resnet18", "resnet18", "cnn", "transformer"}
    assert all(isinstance(d, str) and d and "\n" not in d for d in BACKBONES.values())


def test_build_backbone_sets_config_from_shape() -> None:
    assert build_backbone("mlp", (3, 32, 32), 10).config.input_dim == 3072
    assert build_backbone("mlp", (8, 8), 10).config.input_dim == 64
    assert build_backbone("reduced-resnet18", (28, 28), 10).config == ResNetConfig(10, 20, 1)
    assert build_backbone("resnet18", (3, 32, 32), 10).config.nf == 64
    assert build_backbone("reduced-resnet18", (3, 32, 32), 10, nf=64).config.nf == 64
    cfg = build_backbone("cnn", (28, 28), 10, width=8).config
    assert cfg == SmallCNNConfig(in_channels=1, n_classes=10, width=8, image_size=28)


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(UserError, match="unknown backbone 'vgg'") as e:
        build_backbone("vgg", (3, 32, 32), 10)
    for name in BACKBONES:
        assert name in str(e.value)


@pytest.mark.parametrize(
    "name,key,valid",
    [
        ("mlp", "nf", ["hidden", "dropout"]),
        ("reduced-resnet18", "width", ["nf"]),
        ("cnn", "hidden", ["width"]),
        ("cnn", "in_channels", ["width"]),  # set from input_shape, not an override
        ("mlp", "input_dim", ["hidden", "dropout"]),  # set from input_shape
    ],
)
def test_unknown_override_names_valid_keys(name: str, key: str, valid: list[str]) -> None:
    with pytest.raises(UserError, match=f"unknown option.*{key}") as e:
        build_backbone(name, (3, 32, 32), 10, **{key: 1})
    for v in valid:
        assert v in str(e.value)


@pytest.mark.parametrize(
    "name,shape,overrides",
    [
        ("mlp", (28, 28), {"dropout": 1.5}),
        ("mlp", (28, 28), {"hidden": (0, 10)}),
        ("reduced-resnet18", (28, 28), {"nf": 0}),
        ("reduced-resnet18", (784,), {}),  # not an image shape
        ("cnn", (3, 32, 28), {}),  # not square
        ("cnn", (3, 2, 2), {}),  # too small for two pools
        ("mlp", (0, 28), {}),
    ],
)
def test_bad_values_raise_user_error(name: str, shape: tuple[int, ...], overrides: dict) -> None:
    with pytest.raises(UserError):
        build_backbone(name, shape, 10, **overrides)


def test_zero_classes_is_a_user_error() -> None:
    with pytest.raises(UserError, match="n_classes"):
        build_backbone("mlp", (28, 28), 0)


def test_configs_are_frozen() -> None:
    cfg = MLPConfig(input_dim=4, hidden=[3])
    assert cfg.hidden == (3,)
    with pytest.raises(Exception):
        cfg.input_dim = 5  # type: ignore[misc]
