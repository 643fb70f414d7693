"""Where the clocks tick: each clocked run's levels, their updates, and whether a verdict can be drawn there.

Every clocked run stores `clocks` in result.json (periods and updates per level, the global step;
`nlbench.core.regime`). From it, per run:
- `experience_length`: the global step divided by the number of experiences (steps per experience);
- `slowest_period`, `slowest_updates` and `slowest_per_exp`: the slowest level and how often it updated,
  over the stream and per experience;
- `regime_note`: "" when every level updated at least `MIN_UPDATES` times over the stream, else the
  slowest level that did not ("level C=64: 1 update in 5 experiences").
A verdict row whose method or reference has a run with a regime note is off-regime: it is kept out of
the primary family (`nlbench.commands.report.verdicts`), because a level that barely ticks makes the
clocked method and its unclocked control equal by construction.
"""

from __future__ import annotations

import math
from typing import Any

from nlbench.core.regime import MIN_UPDATES, observed_levels, off_regime, slowest


def add_regime(runs: Any) -> None:
    """Add the clock columns above to `runs` (NaN / "" for runs without a clock)."""
    lengths, periods, updates, per_exp, notes, all_levels = [], [], [], [], [], []
    for clocks, matrix in zip(runs.get("clocks", [None] * len(runs)), runs["matrix"]):
        n_exp = len(matrix) if isinstance(matrix, list) else 0
        levels = observed_levels(clocks, n_exp)
        top = slowest(levels)
        short = off_regime(levels, MIN_UPDATES)
        step = clocks.get("global_step") if isinstance(clocks, dict) else None
        lengths.append(step / n_exp if isinstance(step, (int, float)) and n_exp else math.nan)
        periods.append(top.period if top else math.nan)
        updates.append(top.updates if top else math.nan)
        per_exp.append(top.per_experience if top else math.nan)
        notes.append(short.describe() if short else "")
        all_levels.append(", ".join(f"C={lv.period}: {lv.updates}" for lv in levels))
    runs["experience_length"] = lengths
    runs["slowest_period"] = periods
    runs["slowest_updates"] = updates
    runs["slowest_per_exp"] = per_exp
    runs["regime_note"] = notes
    runs["level_updates"] = all_levels


def pair_note(method_runs: Any, reference_runs: Any) -> str:
    """The off-regime note of a pair: the first run of either side whose clock had a level under the threshold."""
    for side, block in (("method", method_runs), ("reference", reference_runs)):
        notes = [n for n in block.get("regime_note", []) if isinstance(n, str) and n]
        if notes:
            return f"off-regime ({side}): {notes[0]}"
    return ""


def regime_rows(runs: Any) -> list[list[Any]]:
    """One row per (setting, clocked strategy, configuration): periods, updates per level over the stream
    (median over seeds), the slowest level's updates per experience, and whether it is in regime."""
    import numpy as np

    clocked = runs[(runs["status"] == "completed") & runs["slowest_period"].notna()]
    rows = []
    for (suite, scenario, options, strategy, label), block in clocked.groupby(
            ["suite", "scenario", "_k_suite_options", "strategy", "config_label"], sort=True):
        first = block.iloc[0]
        n_exp = len(first["matrix"])
        rows.append([suite, scenario + ("" if options in ("-", "default") else f" ({options})"), label,
                     first["level_updates"], f"{np.median(block['experience_length']):.0f}",
                     f"{np.median(block['slowest_per_exp']):.2f}",
                     f"{int(np.median(block['slowest_updates']))} in {n_exp}",
                     "yes" if not any(block["regime_note"]) else "no: " + next(n for n in block["regime_note"] if n)])
    return rows


REGIME_HEADERS = ["suite", "scenario", "configuration", "updates per level over the stream (seed of the first run)",
                  "steps per experience", "slowest level: updates per experience (median)",
                  "slowest level: updates over the stream", f"in regime (every level >= {MIN_UPDATES} updates)?"]
