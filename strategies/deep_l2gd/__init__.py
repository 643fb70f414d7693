"""Registration of `deep-l2gd` and `deep-l2gd-ema` (Behrouz et al., "Nested Learning",
arXiv:2512.24695, Eq 57/121: W <- W (I - alpha G), then the base step; nl-math.md sections 1-3).

Only the declared hyperparameters and the two builders live here. Nothing heavy is imported at import
time, so `nlbench list` and bad-input validation run without torch; the builders import the optimizer
modules in their bodies. The method itself:

    optimizer.py   DeepL2GD (section 1, + section 3 with conv=True)
    ema.py         DeepL2GDEMA (section 2)
    functional.py  pure projection, Gram, lambda_max guard and EMA math
    conv.py        the Conv2d channel-covariance variant (section 3)
    recording.py   layer selection, forward hooks, recorded statistics
    projection.py  the per-layer projection step and the clock seam
    base_step.py   the SGD/Adam/AdamW step after the projection
    options.py     hyperparameter choices and param-group validation (torch-free)
"""

from __future__ import annotations

from nlbench.core.registry import HParam, register_strategy
from nlbench.core.registry import Parts as _Parts

from .options import BASES, GRAM_NORMS

_DEEP_L2GD_HPARAMS = (
    HParam("lr", 1e-3, "float", "base learning rate", low=0.0, high=10.0),
    HParam("alpha", 1e-4, "float", "projection strength alpha (nl-math.md 1.4: 1e-5..1e-3)", low=0.0, high=1.0),
    HParam("rho", 0.5, "float", "stability guard: alpha_eff = min(alpha, rho / lambda_max)", low=1e-6, high=1.0),
    HParam("base", "adam", "str", "base optimizer after the projection", choices=BASES),
    HParam("project_bias", False, "bool", "also project the bias through the augmented Gram"),
    HParam("gram_norm", "none", "str", "Gram normalisation", choices=GRAM_NORMS),
    HParam("conv", False, "bool", "also project Conv2d layers with the channel-covariance rule (§3)"),
    HParam("weight_decay", 0.0, "float", "weight decay of the base step", low=0.0, high=1.0),
)


def _deep_l2gd_factory(hp, cls, **extra):
    def factory(model, params=None):
        return cls(
            model, lr=hp["lr"], alpha=hp["alpha"], rho=hp["rho"], base=hp["base"], project_bias=hp["project_bias"],
            gram_norm=hp["gram_norm"], conv=hp["conv"], weight_decay=hp["weight_decay"], params=params, **extra,
        )

    return factory


@register_strategy(
    "deep-l2gd",
    description="DeepL2GD: W <- W (I - alpha G) on the batch Gram, then the base step (NL Eq 57/121)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=_DEEP_L2GD_HPARAMS,
)
def build(ctx, hp):
    from .optimizer import DeepL2GD

    return _Parts(optimizer=_deep_l2gd_factory(hp, DeepL2GD))


@register_strategy(
    "deep-l2gd-ema",
    description="DeepL2GD with an EMA of the Gram matrices (bias-corrected, nl-math.md §2)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=_DEEP_L2GD_HPARAMS + (HParam("beta", 0.99, "float", "EMA decay of the Gram", low=0.0, high=0.9999),),
)
def build_ema(ctx, hp):
    from .ema import DeepL2GDEMA

    return _Parts(optimizer=_deep_l2gd_factory(hp, DeepL2GDEMA, beta=hp["beta"]))
