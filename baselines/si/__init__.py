"""Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017), as an Avalanche plugin of our own.

Loss on experience t: L + c * sum_k Omega_k (theta_k - theta*_k)^2, Omega_k the path integral of the
task-loss gradient along each parameter's trajectory over past experiences, theta* the weights at the
end of the last one. The update rule, and why not Avalanche's SynapticIntelligencePlugin (a no-op on
CPU in avalanche-lib 0.6), are in `plugin.py`; this module only registers the strategy, so listing
strategies needs no torch.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy


@register_strategy(
    "si",
    description="Synaptic Intelligence (path-integral importances; our fix of Avalanche's CPU no-op)",
    hparams=(
        HParam("si_lambda", 1.0, "float", "penalty strength c", low=0.0, high=1e9),
        HParam("xi", 0.1, "float", "damping xi in the importance denominator", low=1e-12, high=1e6),
    ),
)
def build(ctx, hp):
    from .plugin import SynapticIntelligence

    return Parts(plugins=[SynapticIntelligence(hp["si_lambda"], hp["xi"])])
