"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017), via Avalanche's EWCPlugin.

Loss on experience t: L_t(theta) + lambda/2 * sum_{k<t} sum_i F_k,i (theta_i - theta*_k,i)^2, with F the
diagonal empirical Fisher at the end of experience k ("separate"), or one running Fisher decayed by
`decay_factor` ("online", Schwarz et al. 2018).
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy


@register_strategy(
    "ewc",
    description="Elastic Weight Consolidation (Avalanche EWCPlugin)",
    hparams=(
        HParam("ewc_lambda", 100.0, "float", "penalty strength lambda", low=0.0, high=1e9),
        HParam("ewc_mode", "separate", "str", "one Fisher per experience, or one online Fisher", choices=("separate", "online")),
        HParam("decay_factor", 1.0, "float", "online mode: Fisher decay per experience", low=0.0, high=1.0),
    ),
)
def build(ctx, hp):
    from avalanche.training.plugins import EWCPlugin

    decay = hp["decay_factor"] if hp["ewc_mode"] == "online" else None
    return Parts(plugins=[EWCPlugin(hp["ewc_lambda"], mode=hp["ewc_mode"], decay_factor=decay)])
