"""Naive fine-tuning with SGD (the "SGD" row of DER/Mammoth tables): the lower bound with plain SGD.

Update rule: W <- W - lr * (grad + weight_decay * W), optionally with heavy-ball momentum.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy, trainable


@register_strategy(
    "sgd",
    description="naive fine-tuning with SGD (lower bound)",
    hparams=(
        HParam("lr", 0.05, "float", "learning rate", low=0.0, high=10.0),
        HParam("momentum", 0.0, "float", "heavy-ball momentum", low=0.0, high=0.999),
        HParam("weight_decay", 0.0, "float", "L2 weight decay", low=0.0, high=1.0),
    ),
    provides_optimizer=True,
)
def build(ctx, hp):
    import torch

    return Parts(
        optimizer=lambda model, params=None: torch.optim.SGD(
            trainable(model, params), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
    )
