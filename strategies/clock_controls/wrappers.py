"""The optimizer wrappers of the clock controls (`cms-sync`, `clocked-adam-sync`, `cms-frozen`).

Both wire the model's parameters to clock levels exactly as the controlled method does
(`nlbench.strategies.cms.wiring.wire_clocks`, same periods and `by`), then build the same
`ClockedOptimizer` (one base optimizer per level) with the clock taken out:

- sync: every level gets period 1 (stepped every step) and its base optimizer's learning rate is
  divided by the level's period C_l (`lr_scale=period`) or kept (`lr_scale=none`);
- frozen: the levels slower than the fastest get `requires_grad = False` and no optimizer (period
  infinity); the fastest level keeps its period.

Parameter groups added later (new task heads, through the runner's persistent optimizer) are fast:
period 1, base learning rate, trained in both controls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..cms.clocks import ClockedOptimizer
from ..cms.wiring import ClockLevel, wire_clocks


def sync_wrapper(hp: Mapping[str, Any]) -> Callable[[nn.Module, Callable], ClockedOptimizer]:
    periods, by, reduction, scale = tuple(hp["periods"]), hp["by"], hp["reduction"], hp["lr_scale"]

    def wrap(model: nn.Module, base_factory: Callable) -> ClockedOptimizer:
        levels = wire_clocks(model, periods, by=by)
        divisor = {id(p): (level.period if scale == "period" else 1) for level in levels for p in level.params}

        def scaled_factory(m: Any, params: Any) -> Any:
            params = list(params)
            optimizer = base_factory(m, params)
            factor = max((divisor.get(id(p), 1) for p in params), default=1)
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] / factor
            return optimizer

        synced = [ClockLevel(1, level.params, level.names, level.level) for level in levels]
        return ClockedOptimizer(synced, scaled_factory, model=model, reduction=reduction)

    return wrap


def frozen_wrapper(hp: Mapping[str, Any]) -> Callable[[nn.Module, Callable], ClockedOptimizer]:
    periods, by, reduction = tuple(hp["periods"]), hp["by"], hp["reduction"]

    def wrap(model: nn.Module, base_factory: Callable) -> ClockedOptimizer:
        levels = wire_clocks(model, periods, by=by)
        fastest = min(level.period for level in levels)
        for level in levels:
            if level.period > fastest:
                for p in level.params:
                    p.requires_grad_(False)
        return ClockedOptimizer([level for level in levels if level.period == fastest], base_factory,
                                model=model, reduction=reduction)

    return wrap
