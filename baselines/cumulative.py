"""Cumulative training, the upper bound: at experience t train on the union of experiences 0..t.

Avalanche's Cumulative strategy. It sees every past sample again (unbounded memory), so it is the
reference that every method with a bounded memory or none tries to approach.
"""

from __future__ import annotations

from nlbench.core.registry import Parts, register_strategy


@register_strategy("cumulative", description="train on all data seen so far (upper bound; Avalanche Cumulative)")
def build(ctx, hp):
    from avalanche.training import Cumulative

    return Parts(template=Cumulative)
