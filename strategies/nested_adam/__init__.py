"""Registration of `nested-adam`: Adam whose second moment lives on a slower clock (NL-arXiv
arXiv:2512.24695 App. B; nlbench math spec ``/work/shared/design/nl-math.md`` Section 8.3).

Registration only: importing this package needs neither torch nor numpy nor Avalanche; the builder
imports the optimizer module when a run is built. The package, read top-down:

* ``adam``: the slow-clock second moment (pure update ``nested_adam_update_``) and ``NestedAdam``.
M3 (Multi-scale Momentum Muon) is its own strategy, ``nlbench.strategies.m3``.

It uses the step skeleton of ``nlbench.strategies.dmgd.base``.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy, trainable


@register_strategy(
    "nested-adam",
    description=("Adam whose second moment lives on a slower clock (NL §8); the guard max(vhat, recent g^2) "
                 "shrinks steps (result diagnostics: guard_rate, step_ratio_to_adam); guard=false "
                 "warm_start=true runs without it"),
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 1e-3, "float", "learning rate", low=0.0, high=10.0),
        HParam("v_period", 10, "int", "period of the second-moment clock, in steps", low=1, high=1_000_000),
        HParam("beta2_mode", "plain", "str", "beta2 per slow update, or beta2^period (same horizon)", choices=("plain", "horizon")),
        HParam("weight_decay", 0.0, "float", "L2 weight decay", low=0.0, high=1.0),
        HParam("guard", True, "bool", "denominator max(vhat, mean g^2 since the last slow update); off = spec 8.3"),
        HParam("warm_start", False, "bool", "start v at g_1^2 (no provisional phase); for guard=false runs"),
    ),
)
def build(ctx, hp):
    from .adam import NestedAdam

    return Parts(
        optimizer=lambda model, params=None: NestedAdam(
            trainable(model, params), lr=hp["lr"], v_period=hp["v_period"], beta2_mode=hp["beta2_mode"],
            weight_decay=hp["weight_decay"], guard=hp["guard"], warm_start=hp["warm_start"],
        )
    )
