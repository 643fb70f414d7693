"""Two-timescale optimizers that are not Nested Learning: the controls `lookahead` and `ademamix`.

A Nested Learning method claims that learning on several timescales forgets less. These two also keep
a fast and a slow memory, without nested levels, so a gain that they share is not specific to NL. Both
come from the `pytorch-optimizer` package (not re-implemented here).

- `lookahead`: M. R. Zhang, J. Lucas, G. Hinton, J. Ba, "Lookahead Optimizer: k steps forward, 1 step
  back", NeurIPS 2019. Fast weights take k steps of the base optimizer (the default optimizer: Adam,
  or SGD with `--hp optimizer=sgd`); then slow <- slow + alpha (fast - slow) and fast <- slow. It wraps
  the base optimizer, so it composes with CL plugins (`lookahead+replay`) like a clock wrapper does.
- `ademamix`: M. Pagliardini, P. Ablin, D. Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
  arXiv:2409.03137 (ICLR 2025). Adam with a second, slow gradient EMA m2 (beta3) mixed in:
  theta <- theta - lr (m1_hat + alpha m2) / (sqrt(v_hat) + eps); `t_alpha_beta3` > 0 warms alpha and
  beta3 up over that many steps (the paper's schedulers), 0 keeps them fixed.

Registration only: torch and pytorch_optimizer are imported by the builders.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy, trainable


@register_strategy(
    "lookahead",
    description="control: Lookahead (Zhang et al. 2019) around the default optimizer, via pytorch-optimizer",
    hparams=(
        HParam("k", 5, "int", "fast steps between two slow updates", low=1, high=10_000),
        HParam("alpha", 0.5, "float", "slow weights' step toward the fast weights", low=0.0, high=1.0),
    ),
    family="control",
    wraps_optimizer=True,
)
def build_lookahead(ctx, hp):
    def wrap(model, base_factory):
        from pytorch_optimizer import Lookahead

        return Lookahead(base_factory(model, None), k=hp["k"], alpha=hp["alpha"])

    return Parts(optimizer_wrapper=wrap)


@register_strategy(
    "ademamix",
    description="control: AdEMAMix (Pagliardini et al. 2024), Adam plus a slow gradient EMA, via pytorch-optimizer",
    hparams=(
        HParam("lr", 1e-3, "float", "learning rate", low=0.0, high=10.0),
        HParam("alpha", 5.0, "float", "weight of the slow EMA", low=0.0, high=1000.0),
        HParam("beta3", 0.9999, "float", "decay of the slow EMA", low=0.0, high=0.99999),
        HParam("t_alpha_beta3", 0, "int", "warm-up steps of alpha and beta3 (0: none)", low=0, high=100_000_000),
        HParam("weight_decay", 0.0, "float", "weight decay", low=0.0, high=1.0),
    ),
    family="control",
    provides_optimizer=True,
)
def build_ademamix(ctx, hp):
    def make(model, params=None):
        from pytorch_optimizer import AdEMAMix

        return AdEMAMix(trainable(model, params), lr=hp["lr"], betas=(0.9, 0.999, hp["beta3"]), alpha=hp["alpha"],
                        t_alpha_beta3=hp["t_alpha_beta3"] or None, weight_decay=hp["weight_decay"])

    return Parts(optimizer=make)
