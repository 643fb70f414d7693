"""Argument checks of a MultiTimescaleMemoryOpt parameter group (refuse, never silently ignore)."""

from __future__ import annotations

import math

from .memory import BLENDS
from .schedule import CURVES

__all__ = ["is_int", "is_num", "check_group"]


def is_int(x, lo: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_group(g: dict, kf_compat: bool) -> None:
    """Raise ValueError for the first invalid hyperparameter of group ``g`` (and, under kf_compat, for
    settings the seed would silently ignore)."""
    if not is_num(g["lr"]) or g["lr"] < 0:
        raise ValueError(f"Invalid lr: {g['lr']!r}")
    d = g["decays"]
    if not isinstance(d, tuple) or len(d) != 3 or not all(is_num(x) and 0 <= x < 1 for x in d):
        raise ValueError(f"Invalid decays: {d!r} (three numbers in [0, 1))")
    if g["blend_mode"] not in BLENDS:
        raise ValueError(f"Invalid blend_mode {g['blend_mode']!r}; choose from {BLENDS}")
    fw = g["fixed_weights"]
    if not isinstance(fw, tuple) or len(fw) != 3 or not all(is_num(x) for x in fw):
        raise ValueError(f"Invalid fixed_weights: {fw!r} (three numbers)")
    if not is_num(g["adaptive_lr"]):
        raise ValueError(f"Invalid adaptive_lr: {g['adaptive_lr']!r}")
    if not is_int(g["max_interval"], 0):
        raise ValueError(f"Invalid max_interval: {g['max_interval']!r} (int >= 0)")
    if g["schedule_curve"] not in CURVES:
        raise ValueError(f"Invalid schedule_curve {g['schedule_curve']!r}; choose from {CURVES}")
    for key in ("reverse_depth_order", "accumulate", "amsgrad"):
        if not isinstance(g[key], bool):
            raise ValueError(f"Invalid {key}: {g[key]!r} (bool)")
    if not is_int(g["default_interval"], 1):
        raise ValueError(f"Invalid default_interval: {g['default_interval']!r} (int >= 1)")
    if not is_int(g["warmup_steps"], 0):
        raise ValueError(f"Invalid warmup_steps: {g['warmup_steps']!r} (int >= 0)")
    if not is_num(g["beta2"]) or not 0 <= g["beta2"] < 1:
        raise ValueError(f"Invalid beta2: {g['beta2']!r} (in [0, 1))")
    if not is_num(g["eps"]) or g["eps"] < 0:
        raise ValueError(f"Invalid eps: {g['eps']!r}")
    if not is_num(g["mix"]) or not 0 <= g["mix"] <= 1:
        raise ValueError(f"Invalid mix: {g['mix']!r} (in [0, 1])")
    if g["beta1"] is not None and (not is_num(g["beta1"]) or not 0 <= g["beta1"] < 1):
        raise ValueError(f"Invalid beta1: {g['beta1']!r} (None or in [0, 1))")
    if kf_compat:
        # The seed accepts beta_1 and ignores it, and hard-codes the 0.5/0.5 mix; refuse settings
        # that would be silently ignored.
        if g["beta1"] is not None:
            raise ValueError("beta1 is unused by the seed: kf_compat=True needs beta1=None")
        if g["mix"] != 0.5:
            raise ValueError("kf_compat=True fixes mix=0.5; use kf_compat=False to change it")
    cr = g["compression_rank"]
    if cr is not None and not is_int(cr, 1):
        raise ValueError(f"Invalid compression_rank: {cr!r} (None or int >= 1)")
    spe = g["steps_per_epoch"]
    if spe is not None and not is_int(spe, 1):
        raise ValueError(f"Invalid steps_per_epoch: {spe!r} (None or int >= 1)")
    for key in ("lr_warmup_fraction", "lr_hold_fraction", "lr_decay_fraction", "lr_min_fraction",
                "lr_warmup_start_fraction"):
        if not is_num(g[key]) or g[key] < 0:
            raise ValueError(f"Invalid {key}: {g[key]!r} (>= 0)")
