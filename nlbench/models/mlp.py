"""Multi-layer perceptron backbone for flattened inputs (Permuted/Split MNIST and friends).

The fully connected network of the continual-learning literature on MNIST-like streams:
GEM (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017)
uses two hidden layers of 100 ReLU units on MNIST, and so does DER (Buzzega et al., "Dark
Experience for General Continual Learning", NeurIPS 2020) on its MNIST settings. The 2x400
default here is the wider variant common in the regularisation literature (e.g. the
Permuted-MNIST MLPs of Hsu et al. 2018 / van de Ven & Tolias 2019); pass ``hidden=(100, 100)``
for the GEM/DER size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class MLPConfig:
    input_dim: int  # product of the input shape, e.g. 784 for 28x28
    hidden: tuple[int, ...] = (400, 400)
    n_classes: int = 10
    dropout: float = 0.0  # after every hidden ReLU; 0 disables
    # "default": PyTorch's Linear init; "xavier": Xavier-uniform weights and zero biases, as
    # Mammoth's MNISTMLP (Buzzega et al. 2020) initialises its layers.
    init: str = "default"
    # The standardisation the inputs arrive with (x = (pixel - mean) / std): the model undoes it,
    # x * std + mean, before its first layer, so it sees raw [0, 1] pixels as Mammoth's models do.
    # The defaults (0, 1) leave inputs as they are.
    input_mean: float = 0.0
    input_std: float = 1.0

    def __post_init__(self) -> None:
        # a list from a config file or CLI becomes a tuple, so the config stays hashable
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.input_dim < 1 or self.n_classes < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(f"MLPConfig needs positive sizes, got {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLPConfig.dropout must be in [0, 1), got {self.dropout}")
        if not self.input_std > 0:
            raise ValueError(f"MLPConfig.input_std must be positive, got {self.input_std}")
        if self.init not in ("default", "xavier"):
            raise ValueError(f"MLPConfig.init must be 'default' or 'xavier', got {self.init!r}")


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU (-> Dropout)] per hidden layer -> ``classifier`` Linear."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.input_dim
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, config.n_classes)
        if config.init == "xavier":
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=1)  # (B, *input_shape) -> (B, input_dim)
        if x.shape[1] != self.config.input_dim:
            raise ValueError(
                f"MLP expects {self.config.input_dim} features per sample, got {x.shape[1]}"
            )
        if self.config.input_std != 1.0 or self.config.input_mean != 0.0:
            x = x * self.config.input_std + self.config.input_mean
        x = self.features(x)  # (B, hidden[-1])
        return self.classifier(x)  # (B, n_classes)

