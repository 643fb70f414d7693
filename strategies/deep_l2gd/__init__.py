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
    fused.py       base="sgd-fused": projection and SGD step in one product (custom Linear backward)
    options.py     hyperparameter choices and param-group validation (torch-free)
"""

from __future__ import annotations

from nlbench.core.registry import HParam, register_strategy
from nlbench.errors import UserError
from nlbench.core.registry import Parts as _Parts

from .options import BASE_CHOICES, GRAM_NORMS

_DEEP_L2GD_HPARAMS = (
    HParam("lr", 1e-3, "float", "base learning rate", low=0.0, high=10.0),
    HParam("alpha", 1e-4, "float", "projection strength alpha (nl-math.md 1.4: 1e-5..1e-3)", low=0.0, high=1.0),
    HParam("rho", 0.5, "float", "stability guard: alpha_eff = min(alpha, rho / lambda_max)", low=1e-6, high=1.0),
    HParam("base", "adam", "str", "base optimizer after the projection (sgd-fused: sgd, projection fused into its step)",
           choices=BASE_CHOICES),
    HParam("project_bias", False, "bool", "also project the bias through the augmented Gram"),
    HParam("gram_norm", "none", "str", "Gram normalisation", choices=GRAM_NORMS),
    HParam("conv", False, "bool", "also project Conv2d layers with the channel-covariance rule (§3)"),
    HParam("weight_decay", 0.0, "float", "weight decay of the base step", low=0.0, high=1.0),
)


def _deep_l2gd_factory(hp, cls, **extra):
    base, fused = ("sgd", True) if hp["base"] == "sgd-fused" else (hp["base"], False)
    if fused:
        extra["fused"] = True

    def factory(model, params=None):
        return cls(
            model, lr=hp["lr"], alpha=hp["alpha"], rho=hp["rho"], base=base, project_bias=hp["project_bias"],
            gram_norm=hp["gram_norm"], conv=hp["conv"], weight_decay=hp["weight_decay"], params=params, **extra,
        )

    return factory


def _check_fused(hp):
    """The fused form is exact only when .grad reaches the SGD step as backward left it (fused.py)."""
    if hp["base"] != "sgd-fused":
        return
    if hp["weight_decay"] != 0.0 or hp["project_bias"]:
        raise UserError("deep-l2gd: base=sgd-fused needs weight_decay=0 and project_bias=false; use base=sgd")
    if hp.get("reduction") == "mean":
        raise UserError("deep-l2gd: base=sgd-fused is not exact under a clock with reduction=mean; use base=sgd")


@register_strategy(
    "deep-l2gd",
    description="DeepL2GD: W <- W (I - alpha G) on the batch Gram, then the base step (NL Eq 57/121)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=_DEEP_L2GD_HPARAMS,
)
def build(ctx, hp):
    from .optimizer import DeepL2GD

    _check_fused(hp)
    return _Parts(optimizer=_deep_l2gd_factory(hp, DeepL2GD))


@register_strategy(
    "deep-l2gd-ema",
    description="DeepL2GD with an EMA of the Gram matrices (bias-corrected, nl-math.md §2)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=_DEEP_L2GD_HPARAMS + (HParam("beta", 0.99, "float", "EMA decay of the Gram", low=0.0, high=0.9999),),
)
def build_ema(ctx, hp):
    if hp["base"] == "sgd-fused":
        raise UserError("deep-l2gd-ema: base=sgd-fused is not available (the EMA projects with the Gram memory, "
                        "not the window's Gram); use base=sgd")
    from .ema import DeepL2GDEMA

    return _Parts(optimizer=_deep_l2gd_factory(hp, DeepL2GDEMA, beta=hp["beta"]))
