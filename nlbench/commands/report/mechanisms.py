"""Whether a mechanism acted where it was measured: lines the report puts under a sweep.

A stabiliser that never fires, or one that fires on every step and so replaces the hyperparameter it
guards, changes what a sweep's axis means. DeepL2GD stores in result.json how often its rho guard
(alpha_eff = min(alpha, rho / lambda_max(G)), nl-math.md 1.4) cut alpha and the mean alpha_eff / alpha
(`DeepL2GD.diagnostics()`, by clock level under `ClockedOptimizer`); this module sums them per alpha.
"""

from __future__ import annotations

from typing import Any


def _guard(diagnostics: Any) -> tuple[int, int, float] | None:
    """(projections, guard-cut projections, sum of alpha_eff / alpha) of one run, over its levels; None if absent."""
    if not isinstance(diagnostics, dict):
        return None
    parts = [diagnostics] if "guard_rate" in diagnostics else [
        v for v in diagnostics.values() if isinstance(v, dict) and "guard_rate" in v]
    if not parts:
        return None
    return (sum(p["projections"] for p in parts), sum(p["guard_bound"] for p in parts),
            sum(p["alpha_eff_over_alpha"] * p["projections"] for p in parts))


def guard_line(grid: Any, runs: Any) -> str | None:
    """One line for a sweep whose runs measured DeepL2GD's guard: per alpha, the share of projections it cut
    and the mean alpha_eff / alpha; None when no run of the sweep's strategy stored one."""
    if "diagnostics" not in runs or "_k_hp.alpha" not in runs:
        return None
    family = runs[(runs["suite"] == grid.suite) & (runs["scenario"] == grid.scenario)
                  & (runs["strategy"] == grid.strategy) & (runs["status"] == "completed")]
    parts = []
    for alpha, block in family.groupby("_k_hp.alpha", sort=True):
        found = [g for g in map(_guard, block["diagnostics"]) if g]
        if not found:
            continue
        n, bound, ratio = (sum(g[i] for g in found) for i in range(3))
        parts.append(f"alpha={alpha}: cut alpha in {100 * bound / n:.0f}% of {n} projections, mean alpha_eff/alpha "
                     f"{ratio / n:.2g} ({len(found)} run{'s' if len(found) > 1 else ''})")
    if not parts:
        return None
    return "DeepL2GD's rho guard (alpha_eff = min(alpha, rho / lambda_max)): " + "; ".join(parts)
