"""The clock constants and the declared hyperparameters of every clocked strategy (`cms`, `clocked-adam`,
and `hope`, which is a CMS too). Torch-free, so the registry can validate `--hp periods=...` before torch
loads. The clocks themselves are in `nlbench.strategies.cms.clocks` (nl-math.md section 4)."""

from __future__ import annotations

from nlbench.core.registry import HParam

__all__ = ["CLOCK_HPARAMS", "DEFAULT_PERIODS", "REDUCTIONS", "STRATEGY_PERIODS"]

DEFAULT_PERIODS: tuple[int, ...] = (1, 8, 64, 512)  # geometric, S000 §6 (nl-math.md 4.2)
STRATEGY_PERIODS: tuple[int, ...] = (1, 8, 64)  # K = 3 for short runs (nl-math.md 4.2/4.4)
REDUCTIONS = ("sum", "mean")

CLOCK_HPARAMS: tuple[HParam, ...] = (
    HParam("periods", STRATEGY_PERIODS, "ints", "clock periods C_1 < C_2 < ..., fastest first (one level each); "
           "steps, or experience lengths: e/8, e, 2e (resolved per stream)",
           low=1, high=1_000_000, increasing=True, relative=True),
    HParam("reduction", "sum", "str", "window gradient: sum (NL Eq 71) or mean", choices=REDUCTIONS),
    HParam("by", "auto", "str", "level assignment: auto (module clock levels, else depth) or depth",
           choices=("auto", "depth")),
    HParam("flush_on_experience_end", False, "bool", "apply partial windows at the end of each experience"),
)
