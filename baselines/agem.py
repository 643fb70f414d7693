"""Averaged GEM (Chaudhry et al., ICLR 2019), via Avalanche's AGEMPlugin.

If the current gradient g conflicts with the gradient g_ref on a sample of the episodic memory
(g . g_ref < 0), it is projected: g <- g - (g . g_ref / g_ref . g_ref) g_ref.
"""

from __future__ import annotations

from avalanche.training.plugins import AGEMPlugin

from nlbench.registry import HParam, Parts, register_strategy


@register_strategy(
    "agem",
    description="Averaged Gradient Episodic Memory (Avalanche AGEMPlugin)",
    hparams=(
        HParam("patterns_per_exp", 100, "int", "memory samples kept per experience", low=1, high=1_000_000),
        HParam("sample_size", 64, "int", "memory samples per reference gradient", low=1, high=1_000_000),
    ),
)
def build(ctx, hp):
    return Parts(plugins=[AGEMPlugin(patterns_per_experience=hp["patterns_per_exp"], sample_size=hp["sample_size"])])
