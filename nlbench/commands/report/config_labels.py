"""Configuration names a reader needs: "adam, tuned", "adam, defaults, probes", "cms, periods=(1,8,128)".

Figures and tables name a configuration by how it came about, not by a raw key list: the run `nlbench
tune` chose ("tuned"), the method's own defaults ("defaults"), or the hyperparameters that differ from
the defaults. Measurement options that change what a run records but not what it trains (continual
evaluation, probes) and a protocol preset are added. The raw keys stay in the CSV tables (`config`).
"""

from __future__ import annotations

from typing import Any

from nlbench.commands.report.labels import is_missing, label


def _non_defaults(strategy: str, row: Any) -> list[str]:
    from nlbench.core.registry import resolve_hparams
    from nlbench.errors import UserError

    try:
        defaults = resolve_hparams(strategy, {})
    except UserError:  # a strategy no longer registered: every stored key is shown
        defaults = {}
    shown = []
    for key in sorted(k.removeprefix("hp.") for k in row.index if k.startswith("hp.")):
        value = row[f"hp.{key}"]
        if is_missing(value) if not isinstance(value, (list, tuple)) else False:
            continue
        if key in defaults and label(defaults[key]) == label(value):
            continue
        shown.append(f"{key}={label(value)}")
    return shown


def config_label(row: Any, tuned: bool) -> str:
    parts = [row["strategy"]]
    if tuned:
        parts.append("tuned")
    else:
        changed = _non_defaults(row["strategy"], row)
        parts.append(", ".join(changed) if changed else "defaults")
    if not is_missing(row.get("protocol")):
        parts.append(f"protocol {row['protocol']}")
    every = row.get("eval_every")
    if not is_missing(every) and int(every or 0) > 0:
        parts.append(f"eval every {int(every)}")
    if row.get("probes") is True:
        parts.append("probes")
    return ", ".join(parts)


def add_config_labels(runs: Any, tuned_ids: set[str]) -> None:
    """A `config_label` and a `tuned` column for every run."""
    runs["tuned"] = runs["run_id"].isin(tuned_ids)
    runs["config_label"] = [config_label(row, bool(row["tuned"])) for _, row in runs.iterrows()]
