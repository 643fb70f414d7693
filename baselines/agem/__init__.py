"""Averaged GEM (Chaudhry, Ranzato, Rohrbach, Elhoseiny, ICLR 2019, "Efficient Lifelong Learning with A-GEM").

An episodic memory keeps `patterns_per_exp` samples of every past experience. Before each training
step, a reference gradient g_ref is taken on a minibatch of the memory; after the backward pass, if
the current gradient g conflicts with it (g . g_ref < 0), g is projected onto the half-space where it
does not increase the memory loss (to first order):

    g <- g - (g . g_ref / g_ref . g_ref) g_ref.

On the stock data path this is Avalanche's AGEMPlugin. On the fast path it is `DeviceAGEM`
(`plugin.py`): the same policy with the memory as device tensors and a projection without a host
sync. This module only registers the strategy, so listing strategies needs no torch.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy


@register_strategy(
    "agem",
    description="Averaged Gradient Episodic Memory (device memory on the fast path; Avalanche AGEMPlugin on the stock path)",
    hparams=(
        HParam("patterns_per_exp", 100, "int", "memory samples kept per experience", low=1, high=1_000_000),
        HParam("sample_size", 64, "int", "memory samples per reference gradient", low=1, high=1_000_000),
    ),
)
def build(ctx, hp):
    if ctx.fast_path:
        from .plugin import DeviceAGEM

        return Parts(plugins=[DeviceAGEM(hp["patterns_per_exp"], hp["sample_size"])])
    from avalanche.training.plugins import AGEMPlugin

    return Parts(plugins=[AGEMPlugin(patterns_per_experience=hp["patterns_per_exp"], sample_size=hp["sample_size"])])
