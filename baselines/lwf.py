"""Learning without Forgetting (Li & Hoiem, TPAMI 2017), via Avalanche's LwFPlugin.

Loss on experience t: CE(y, f_t(x)) + alpha * T^2 * KL(softmax(f_{t-1}(x)/T) || softmax(f_t(x)/T)), the
previous model's outputs on the current data acting as soft targets.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy


@register_strategy(
    "lwf",
    description="Learning without Forgetting, distillation from the previous model (Avalanche LwFPlugin)",
    hparams=(
        HParam("lwf_alpha", 1.0, "float", "distillation weight", low=0.0, high=1e6),
        HParam("temperature", 2.0, "float", "softmax temperature", low=1e-3, high=1e3),
    ),
)
def build(ctx, hp):
    from avalanche.training.plugins import LwFPlugin

    return Parts(plugins=[LwFPlugin(alpha=hp["lwf_alpha"], temperature=hp["temperature"])])
