"""A sweep's best cell against its corner: is the best configuration of a grid better than the grid's
"off" corner, paired by seed?

On a periods x alpha grid (the Nested Learning sweep: clock periods x DeepL2GD's alpha) the corner is
the cell with the smallest alpha (alpha = 0 switches DeepL2GD's projection off) and the fastest periods
(the smallest slowest period: all-1 periods are unclocked); on any other grid, the cell with the
smallest value on every axis. The best cell is the one with the highest mean ACC. Choosing the best of
k cells on the same seeds that then test it favours it (a winner's curse): the line says so, and the
interval is the unadjusted paired 95% t-interval of that one comparison.
"""

from __future__ import annotations

from typing import Any

from nlbench.commands.report.labels import sort_key
from nlbench.commands.report.verdicts import pair_by_seed, paired_stats


def _slowest(value: Any) -> Any:
    return max(value) if isinstance(value, (tuple, list)) and value else value


def _corner_key(cell: Any, grid: Any) -> tuple:
    x = _slowest(cell["_x_raw"]) if grid.x == "periods" else cell["_x_raw"]
    y = (_slowest(cell["_y_raw"]) if grid.y == "periods" else cell["_y_raw"]) if grid.y else 0
    return (sort_key(y if grid.y == "alpha" else x), sort_key(x if grid.y == "alpha" else y))


def best_vs_corner(grid: Any, runs: Any) -> str | None:
    """One line: the best cell's paired ACC and forgetting difference against the corner, or None."""
    cells = grid.table
    if len(cells) < 2:
        return None
    corner = min((row for _, row in cells.iterrows()), key=lambda c: _corner_key(c, grid))
    best = cells.loc[cells["acc_mean"].idxmax()]
    if best[grid.x] == corner[grid.x] and (grid.y is None or best[grid.y] == corner[grid.y]):
        return f"the best cell is the corner ({_name(best, grid)}): no cell beats it in mean ACC"
    family = runs[(runs["suite"] == grid.suite) & (runs["scenario"] == grid.scenario) & (runs["strategy"] == grid.strategy)
                  & (runs["status"] == "completed")]

    def of(cell: Any) -> Any:
        mask = family[f"_k_hp.{grid.x}"] == cell[grid.x]
        if grid.y:
            mask &= family[f"_k_hp.{grid.y}"] == cell[grid.y]
        for key, value in grid.fixed.items():
            column = f"_k_hp.{key}" if f"_k_hp.{key}" in family else f"_k_{key}"
            if column in family:
                mask &= family[column] == value
        return family[mask]

    merged = pair_by_seed(of(best), of(corner))
    parts = []
    for metric, title in (("acc", "ACC"), ("forgetting", "forgetting")):
        row = paired_stats(merged[metric], merged[f"{metric}_ref"])
        interval = "" if row["n"] < 2 else f" [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}], p = {row['p']:.2g}"
        parts.append(f"{title} {row['estimate']:+.1f}{interval}")
    return (f"best cell ({_name(best, grid)}) minus corner ({_name(corner, grid)}), paired over {len(merged)} seeds: "
            + "; ".join(parts) + f" (unadjusted; the best of {len(cells)} cells was chosen on these same seeds)")


def _name(cell: Any, grid: Any) -> str:
    return f"{grid.x}={cell[grid.x]}" + (f", {grid.y}={cell[grid.y]}" if grid.y else "")
