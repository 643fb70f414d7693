"""DeepL2GD's hyperparameter vocabulary (NL-arXiv Eq 57/121; nl-math.md sections 1-3): the allowed
choices and the check of one param group.

Torch-free on purpose: the registration names these choices, and `nlbench list` and bad-input
validation must run without importing torch.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["BASES", "BASE_CHOICES", "CONV_APPLIES", "CONV_MODES", "CONV_PRESETS", "GRAM_NORMS", "check_nonneg", "validate_group"]

BASES = ("sgd", "adam", "adamw")
# What the registration offers: "sgd-fused" is DeepL2GD(base="sgd", fused=True), the same update
# computed in one product (fused.py). A choice of `base` rather than a new hyperparameter, so the
# resolved hyperparameters (and the run ids) of existing runs do not change.
BASE_CHOICES = BASES + ("sgd-fused",)
GRAM_NORMS = ("none", "trace")
CONV_MODES = ("mean_tap", "per_tap", "exact")
CONV_APPLIES = ("shift", "scale")
# S000's four surviving bullets read as: mean over taps, rescale the kernel, keep its mean magnitude.
# This is our guess at the seed's behaviour (nl-math.md 3.1, 11 #15), kept for fidelity runs only.
CONV_PRESETS: dict[str, dict[str, Any]] = {
    "s000_guess": {"conv_mode": "mean_tap", "conv_apply": "scale", "preserve_magnitude": True},
}


def check_nonneg(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def validate_group(g: dict) -> None:
    """Raise ValueError unless the param group ``g`` holds valid DeepL2GD (or EMA: ``beta``) settings."""
    check_nonneg("lr", g["lr"])
    check_nonneg("alpha", g["alpha"])
    rho = g["rho"]
    if not (isinstance(rho, (int, float)) and 0.0 < rho <= 1.0):
        raise ValueError(f"rho must be in (0, 1], got {rho!r}")
    if g["base"] not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {g['base']!r}")
    if g["gram_norm"] not in GRAM_NORMS:
        raise ValueError(f"gram_norm must be one of {GRAM_NORMS}, got {g['gram_norm']!r}")
    betas = g["betas"]
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    check_nonneg("eps", g["eps"])
    check_nonneg("weight_decay", g["weight_decay"])
    check_nonneg("momentum", g["momentum"])
    check_nonneg("dampening", g["dampening"])
    if g["base"] != "sgd" and (g["momentum"] != 0 or g["nesterov"] or g["dampening"] != 0):
        raise ValueError("momentum/dampening/nesterov apply to base='sgd' only")
    if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
        raise ValueError("nesterov requires momentum > 0 and zero dampening")
    if g["base"] == "sgd" and g["amsgrad"]:
        raise ValueError("amsgrad applies to base='adam'/'adamw' only")
    if g["conv_mode"] not in CONV_MODES:
        raise ValueError(f"conv_mode must be one of {CONV_MODES + tuple(CONV_PRESETS)}, got {g['conv_mode']!r}")
    if g["conv_apply"] not in CONV_APPLIES:
        raise ValueError(f"conv_apply must be one of {CONV_APPLIES}, got {g['conv_apply']!r}")
    if "beta" in g and not (isinstance(g["beta"], (int, float)) and 0.0 <= g["beta"] < 1.0):
        raise ValueError(f"beta must be in [0, 1), got {g['beta']!r}")
