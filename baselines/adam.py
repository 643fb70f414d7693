"""Naive fine-tuning with Adam (Kingma & Ba, 2015): the lower bound every CL method must beat.

Update rule: torch.optim.Adam on the current experience's loss only; nothing protects old tasks.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy, trainable


@register_strategy(
    "adam",
    description="naive fine-tuning with Adam (lower bound)",
    hparams=(
        HParam("lr", 1e-3, "float", "learning rate", low=0.0, high=10.0),
        HParam("weight_decay", 0.0, "float", "L2 weight decay", low=0.0, high=1.0),
    ),
    provides_optimizer=True,
)
def build(ctx, hp):
    import torch

    return Parts(
        optimizer=lambda model, params=None: torch.optim.Adam(
            trainable(model, params), lr=hp["lr"], weight_decay=hp["weight_decay"]
        )
    )
