"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017), via Avalanche's EWCPlugin.

Loss on experience t: L_t(theta) + lambda * sum_{k<t} sum_i F_k,i (theta_i - theta*_k,i)^2 (Avalanche adds
lambda times the sum, with no 1/2), with F the diagonal Fisher at the end of experience k ("separate"), or
one running Fisher F <- decay_factor * F + F_new ("online", Schwarz et al. 2018).

Two estimates of F (`ewc_fisher`):
- "minibatch" (Avalanche's, the default): the mean over the experience's minibatches (of the training
  batch size) of the squared gradient of the minibatch-mean loss;
- "per-sample" (Mammoth's `ewc_on`, as used by Buzzega et al. 2020 and SFR, Scannell et al. 2024): the
  mean over the experience's samples of p(y_n | x_n) * (d log p(y_n | x_n) / d theta)^2.
The two are not on one scale (squaring a minibatch mean shrinks the per-sample noise term; after the
first Split-FMNIST task at batch 10 the minibatch estimate summed to 2.5 times less), so one lambda means
two penalties; with "per-sample", Mammoth's `e_lambda` and `gamma` are this strategy's `ewc_lambda` and
`decay_factor` by definition. The estimator is `fisher.py`; this module only
registers the strategy, so listing strategies needs no torch.
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
        HParam("ewc_fisher", "minibatch", "str", "Fisher estimate: squared minibatch gradients (Avalanche) or "
               "per-sample, p(y|x)-weighted (Mammoth)", choices=("minibatch", "per-sample")),
    ),
)
def build(ctx, hp):
    from avalanche.training.plugins import EWCPlugin

    decay = hp["decay_factor"] if hp["ewc_mode"] == "online" else None
    # A spec stores ewc_fisher only when it is set (nlbench.core.spec), so runs made before it existed keep their ids.
    if hp.get("ewc_fisher", "minibatch") == "per-sample":
        from .fisher import PerSampleFisherEWC

        return Parts(plugins=[PerSampleFisherEWC(hp["ewc_lambda"], mode=hp["ewc_mode"], decay_factor=decay)])
    return Parts(plugins=[EWCPlugin(hp["ewc_lambda"], mode=hp["ewc_mode"], decay_factor=decay)])
