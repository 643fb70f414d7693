"""Sweep grids: families of configurations that differ only in hyperparameters, laid out for heatmaps.

The default axes are periods x alpha, the Nested Learning clock sweep (`DEFAULT_SWEEP_AXES`); when
those do not vary, the hyperparameters that do vary are the axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlbench.commands.report.labels import SPEC_KEYS, slug

DEFAULT_SWEEP_AXES = ("periods", "alpha")


def check_sweep_axes(axes: tuple[str, ...]) -> tuple[str, ...]:
    """`--sweep-axes`: one or two distinct hyperparameters, each declared by some registered strategy
    (metadata only, no torch); UserError naming the valid ones otherwise."""
    from nlbench.core.registry import declared_hparams, strategies
    from nlbench.errors import UserError

    if not axes:
        raise UserError("--sweep-axes needs at least one hyperparameter name, e.g. periods,alpha")
    if len(axes) > 2 or len(set(axes)) != len(axes):
        raise UserError(f"--sweep-axes takes two different hyperparameters as X,Y (or one), got {','.join(axes)}")
    valid = sorted({h for name in strategies() for h in declared_hparams(name)})
    unknown = [a for a in axes if a not in valid]
    if unknown:
        raise UserError(f"--sweep-axes: {unknown[0]!r} is not a hyperparameter of any strategy; valid: {', '.join(valid)}")
    return axes


@dataclass
class SweepGrid:
    """One heatmap: a family of configurations that differ only in the hyperparameters on its axes."""

    suite: str
    scenario: str
    strategy: str
    x: str  # hyperparameter on the x axis
    y: str | None  # on the y axis (None: a single row)
    fixed: dict[str, str]  # the family's other settings, as labels
    table: Any  # DataFrame: x, y, acc/forgetting mean and ci95, n
    name: str = ""
    figure: Path | None = None
    csv: Path | None = None


def find_sweeps(summary: Any, axes: tuple[str, ...] = DEFAULT_SWEEP_AXES) -> list[SweepGrid]:
    """Families of configurations that differ only in hyperparameters, laid out as grids.

    Within one (suite, scenario, head, backbone, strategy, epochs, batch size, protocol) family, the
    hyperparameters that take more than one value are the sweep's dimensions. The axes are the
    requested `axes` that vary (default periods x alpha, the Nested Learning clock sweep), then the
    other varying hyperparameters in name order, two at most; any further varying hyperparameter
    splits the family into one grid per value. A grid is kept when an axis has at least two values.
    """
    import pandas as pd

    grids: list[SweepGrid] = []
    if summary.empty:
        return grids
    base = [f"_k_{c}" for c in SPEC_KEYS if f"_k_{c}" in summary.columns]
    hp_cols = sorted(c[len("_k_hp."):] for c in summary.columns if c.startswith("_k_hp."))
    for _, family in summary.groupby(base, sort=True):
        if len(family) < 2:
            continue
        varying = [h for h in hp_cols if family[f"_k_hp.{h}"].nunique() > 1]
        if not varying:
            continue
        chosen = [a for a in axes if a in varying] + [v for v in varying if v not in axes]
        x, y = chosen[0], (chosen[1] if len(chosen) > 1 else None)
        rest = [v for v in varying if v not in (x, y)]
        subsets = family.groupby([f"_k_hp.{r}" for r in rest], sort=True) if rest else [((), family)]
        for sub_key, sub in subsets:
            sub_key = sub_key if isinstance(sub_key, tuple) else (sub_key,)
            if sub[f"_k_hp.{x}"].nunique() < 2 and (y is None or sub[f"_k_hp.{y}"].nunique() < 2):
                continue
            first = sub.iloc[0]
            fixed = {c: first[f"_k_{c}"] for c in ("head", "backbone", "epochs", "batch_size", "protocol") if f"_k_{c}" in sub.columns}
            fixed.update({r: v for r, v in zip(rest, sub_key)})
            cells = pd.DataFrame({
                x: sub[f"_k_hp.{x}"],
                "_x_raw": [hp.get(x) for hp in sub["_hp"]],
                (y or "_y"): sub[f"_k_hp.{y}"] if y else "(all)",
                "_y_raw": [hp.get(y) for hp in sub["_hp"]] if y else 0,
                "acc_mean": sub["acc_mean"], "acc_ci95": sub["acc_ci95"],
                "forgetting_mean": sub["forgetting_mean"], "forgetting_ci95": sub["forgetting_ci95"],
                "n": sub["n"],
            })
            name = "_".join([first["suite"], first["scenario"], first["strategy"], x] + ([y] if y else [])
                            + [f"{r}-{v}" for r, v in zip(rest, sub_key)])
            grids.append(SweepGrid(first["suite"], first["scenario"], first["strategy"], x, y, fixed, cells.reset_index(drop=True), slug(name)))
    return grids
