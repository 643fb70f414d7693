"""When each parameter of the multi-timescale memory optimizer updates, and with which lr
(port of seed S001, Kareem Farid's Keras ``NestedLearningOptimizer``,
github.com/Kareemfarid/nested-learning-optimizer; nlbench math spec ``/work/shared/design/nl-math.md``
Section 6).

* depth -> interval (spec 6.1): a parameter's depth is the position of its owning module; the
  interval c comes from the relative depth through a linear | exponential | cosine curve;
* due(s) = c <= 1 or s < warmup_steps or s % c == 0 at global step s (1-based);
* the seed's per-epoch lr sawtooth (warm-up, hold, decay).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["CURVES", "owning_modules", "compute_depths", "per_variable_relative_depths",
           "interval_from_depth", "should_update", "sawtooth_lr"]

CURVES = ("linear", "exponential", "cosine")


def owning_modules(model: nn.Module) -> list[tuple[str, list[tuple[str, Tensor]]]]:
    """Modules that directly own at least one trainable parameter, in named_modules() order, each
    with its (qualified name, parameter) list. A parameter shared by several modules belongs to the
    first one (as in model.named_parameters())."""
    seen: set[int] = set()
    owners = []
    for mname, module in model.named_modules():
        own = []
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            own.append((f"{mname}.{pname}" if mname else pname, p))
        if own:
            owners.append((mname, own))
    return owners


def compute_depths(model: nn.Module) -> dict[str, int]:
    """Depth of every trainable parameter of ``model``: the position of its owning module among the
    modules that own trainable parameters, in ``named_modules()`` order (kernel and bias of a layer
    share a depth). Keys are the names of ``model.named_parameters()``.

    Frozen parameters are skipped (the seed counts layers with *trainable* weights). Unlike the seed's
    Keras helper, the root module is not counted as a layer: in Keras the model itself owns all weights
    through ``trainable_weights`` and comes first, which gives every variable depth 0 (so with
    reverse_depth_order=True every interval is 1). nlbench uses the intended per-layer depths.
    """
    return {name: d for d, (_, own) in enumerate(owning_modules(model)) for name, _ in own}


def per_variable_relative_depths(n: int) -> list[float]:
    """The seed's fallback when no model is analysed: each VARIABLE is its own layer, rd = i/(n-1)
    (0.5 for a single variable). Kernel and bias of one layer therefore get different intervals."""
    if n <= 0:
        return []
    if n == 1:
        return [0.5]
    return [i / (n - 1) for i in range(n)]


def interval_from_depth(relative_depth: float, max_interval: int, curve: str = "cosine",
                        reverse_depth_order: bool = True, kf_compat: bool = True) -> int:
    """Update interval c for relative depth rd in [0, 1] (0 = first layer), spec 6.1.

    f = 1 - rd (linear), exp(-3 rd) (exponential), (1 + cos(pi rd)) / 2 (cosine), after
    rd <- 1 - rd when reverse_depth_order (then the LAST layer is slowest).
    kf_compat: c = max(1, floor(M f + 1)) in [1, M+1] (the seed's off-by-one, kept).
    otherwise: c = max(1, floor(M f + 1/2)) in [1, M] (round half up, not Python's banker's round).
    """
    if curve not in CURVES:
        raise ValueError(f"unknown schedule curve {curve!r}; choose from {CURVES}")
    rd = 1.0 - relative_depth if reverse_depth_order else relative_depth
    if curve == "linear":
        f = 1.0 - rd
    elif curve == "exponential":
        f = math.exp(-3.0 * rd)
    else:
        f = 0.5 * (1.0 + math.cos(math.pi * rd))
    # Without the 1e-9, exact halves (e.g. 6 * 0.25 = 1.5) round either way depending on the last
    # bit of cos(); the seed's floor(M f + 1) is kept literally.
    c = math.floor(max_interval * f + 1.0) if kf_compat else math.floor(max_interval * f + 0.5 + 1e-9)
    return max(1, int(c))


def should_update(step: int, interval: int, warmup_steps: int = 0) -> bool:
    """due(s) = c <= 1 or s < warmup_steps or s % c == 0 (s 1-based, spec 6.1)."""
    return interval <= 1 or step < warmup_steps or step % interval == 0


def sawtooth_lr(step: int, base_lr: float, steps_per_epoch: int, warmup_fraction: float = 0.25,
                hold_fraction: float = 0.25, decay_fraction: float = 0.5, min_fraction: float = 0.01,
                warmup_start_fraction: float = 0.01) -> float:
    """The seed's per-epoch LR sawtooth at global step s (restarts every epoch), q = (s-1) mod P:
    linear warm-up from start to base over warmup_fraction*P, hold until (warmup+hold)*P, then linear
    decay to min over decay_fraction*P (and stay there)."""
    P = float(steps_per_epoch)
    q = float((step - 1) % steps_per_epoch)
    warm = warmup_fraction * P
    hold_end = (warmup_fraction + hold_fraction) * P
    start, peak, low = base_lr * warmup_start_fraction, base_lr, base_lr * min_fraction
    if q < warm:
        return start + min(q / max(warm, 1.0), 1.0) * (peak - start)
    if q < hold_end:
        return peak
    return peak - min((q - hold_end) / max(decay_fraction * P, 1.0), 1.0) * (peak - low)
