"""Registration of `dmgd`, `delta-momentum` and `muon`: Deep Momentum GD (momentum as a learned MLP
memory of the gradients, NL-arXiv arXiv:2512.24695 Eq 50-52), delta-rule momentum (NL Eq 48-49) and
Muon (Jordan et al. 2024), nlbench math spec ``/work/shared/design/nl-math.md`` section 7.

Registration only: importing this package needs neither torch nor numpy nor Avalanche; each builder
imports its optimizer module when a run is built. The package, read top-down:

* ``base``: the step skeleton they share (global step, matrix view, Adam fallback for 1-D
  parameters, argument checks); nested_adam's NestedAdam and M3 use it too.
* ``newton_schulz``: NS_5 and the cubic polar iteration (pure functions).
* ``deep_momentum``: the MLP memory, its closed-form inner gradient, ``DeepMomentumGD``.
* ``delta_momentum``: the delta-rule update and ``DeltaMomentum``.
* ``muon``: ``Muon``.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy, trainable


@register_strategy(
    "dmgd",
    description=("Deep Momentum GD: momentum as a learned MLP memory of gradients (NL §7.2). key_norm=rms: "
                 "the MLP reads U/RMS(U); on raw gradients its output is second order in |U| and it moved "
                 "the trajectory by 0.02% vs hidden=0 (EMA momentum under another name). mlp_reduction=mean: "
                 "the shared MLP weights see all d_out gradient rows; the spec's sum step diverged (precond "
                 "adam, NaN by step 18-20)"),
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 0.05, "float", "outer learning rate eta_out (SGD scale: the memory regresses onto -U)",
               low=0.0, high=10.0),
        HParam("alpha", 1.0, "float", "retention of the memory parameters", low=0.0, high=1.0),
        HParam("zeta", 0.1, "float", "inner learning rate of the memory", low=0.0, high=10.0),
        HParam("objective", "l2", "str", "the memory's inner objective", choices=("dot", "l2")),
        HParam("precond", "identity", "str", "value P regressed onto (l2 objective)", choices=("identity", "adam", "ns")),
        HParam("sigma_out", "identity", "str", "output nonlinearity (ns = Newton-Schulz, Muon-like)", choices=("identity", "ns")),
        HParam("hidden", 32, "int", "hidden width of the memory MLP (0 = linear memory)", low=0, high=4096),
        HParam("key_norm", "rms", "str", "key of the MLP part: U / RMS(U) (scale-free) or raw U", choices=("rms", "none")),
        HParam("mlp_reduction", "mean", "str", "inner step of the shared MLP weights: row mean or the spec's sum",
               choices=("mean", "sum")),
    ),
)
def build_dmgd(ctx, hp):
    from .deep_momentum import DeepMomentumGD

    return Parts(
        optimizer=lambda model, params=None: DeepMomentumGD(
            trainable(model, params), lr=hp["lr"], alpha=hp["alpha"], zeta=hp["zeta"], objective=hp["objective"],
            precond=hp["precond"], sigma_out=hp["sigma_out"], hidden=hp["hidden"],
            mlp_reduction=hp["mlp_reduction"], key_norm=hp["key_norm"],
        )
    )


@register_strategy(
    "delta-momentum",
    description="Delta momentum: L2-regression momentum memory (NL Eq 48-49)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 1e-2, "float", "learning rate zeta", low=0.0, high=10.0),
        HParam("alpha", 0.9, "float", "momentum retention", low=0.0, high=1.0),
        HParam("zeta_p", 0.5, "float", "strength of the key projection", low=0.0, high=1.0),
    ),
)
def build_delta_momentum(ctx, hp):
    from .delta_momentum import DeltaMomentum

    return Parts(
        optimizer=lambda model, params=None: DeltaMomentum(
            trainable(model, params), lr=hp["lr"], alpha=hp["alpha"], zeta_p=hp["zeta_p"]
        )
    )


@register_strategy(
    "muon",
    description="Muon: momentum orthogonalised by Newton-Schulz for hidden-layer matrices, AdamW for embeddings, positions, head and vectors (Jordan et al. 2024; NL Eq 42-44)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 0.02, "float", "learning rate of matrix parameters", low=0.0, high=10.0),
        HParam("momentum", 0.95, "float", "momentum", low=0.0, high=0.999),
        HParam("nesterov", False, "bool", "Nesterov momentum"),
        HParam("adam_lr", 1e-3, "float", "Adam lr of the fallback: embeddings, positions, head, non-matrix parameters", low=0.0, high=10.0),
    ),
)
def build_muon(ctx, hp):
    from .muon import Muon, muon_param_groups

    def factory(model, params=None):
        # Muon's own practice: Newton-Schulz for hidden-layer matrices only; embeddings, positional
        # parameters, the head and every non-matrix parameter go to the AdamW fallback.
        return Muon(muon_param_groups(model, trainable(model, params)), lr=hp["lr"], momentum=hp["momentum"],
                    nesterov=hp["nesterov"], adam_lr=hp["adam_lr"])

    return Parts(optimizer=factory)
