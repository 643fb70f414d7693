"""Statistics over seeds: one row per configuration with mean, sample std, n and a Student-t interval.

Runs are grouped by their `_k_<column>` labels (`nlbench.commands.report.load.add_labels`), so one
group is one configuration and its runs differ only in the seed. Only runs with status `completed`
enter the statistics; the others are counted per configuration as excluded. For n runs: mean, sample
std (ddof=1), and the 95% confidence interval of the mean, mean ± t(0.975, n-1)·std/√n (Student t,
scipy.stats); n=1 has no interval. pandas, numpy and scipy are imported inside the functions.
"""

from __future__ import annotations

import math
from typing import Any

from nlbench.commands.report.labels import METRICS, SPEC_KEYS, is_missing

CONFIDENCE = 0.95


def t_critical(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value for a mean of n samples (df = n-1); NaN for n < 2."""
    if n < 2:
        return math.nan
    from scipy import stats  # a dependency of scikit-learn, so always installed with nlbench

    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def aggregate(runs: Any, keys: list[str]) -> Any:
    """One row per configuration: mean, std, ci95, n of each metric over its completed runs."""
    import numpy as np
    import pandas as pd

    label_keys = [f"_k_{c}" for c in keys]
    completed = runs[runs["status"] == "completed"]
    others = runs[runs["status"] != "completed"]
    excluded = others.groupby(label_keys).size().to_dict() if len(others) else {}
    excluded_status = (
        others.groupby(label_keys)["status"].agg(lambda s: ", ".join(f"{n} {k}" for k, n in s.value_counts().items())).to_dict()
        if len(others) else {}
    )
    rows = []
    for key, group in completed.groupby(label_keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        first = group.iloc[0]
        row: dict[str, Any] = {c: first[c] for c in ("suite", "scenario", "strategy", "config", "group_label", "config_label")
                               if c in first.index}
        row.update({c: l for c, l in zip(keys, key) if c not in ("suite", "scenario", "strategy")})
        row.update({f"_k_{c}": l for c, l in zip(keys, key)})
        row["n"] = len(group)
        row["seeds"] = ",".join(str(s) for s in sorted(group["seed"]))
        row["excluded"] = int(excluded.get(key, 0))
        row["excluded_status"] = excluded_status.get(key, "")
        for metric in METRICS:
            values = pd.to_numeric(group[metric], errors="coerce").dropna().to_numpy(dtype=float)
            n = len(values)
            mean = float(values.mean()) if n else math.nan
            std = float(values.std(ddof=1)) if n > 1 else math.nan
            row[f"{metric}_mean"] = mean
            row[f"{metric}_std"] = std
            row[f"{metric}_ci95"] = t_critical(n) * std / math.sqrt(n) if n > 1 else math.nan
            row[f"{metric}_n"] = n
        row["time_per_exp_s"] = float(pd.to_numeric(group["time_per_exp_s"], errors="coerce").mean())
        row["peak_memory_mb"] = float(pd.to_numeric(group["peak_memory_mb"], errors="coerce").mean())
        row["wall_time_s"] = float(pd.to_numeric(group["wall_time_s"], errors="coerce").mean())
        row["run_ids"] = ",".join(group["run_id"])
        matrices = [np.asarray(m, dtype=float) for m in group["matrix"] if isinstance(m, list) and m]
        shapes = {m.shape for m in matrices}
        row["_matrix"] = np.mean(matrices, axis=0) if matrices and len(shapes) == 1 else None
        row["_hp"] = {c[3:]: first[c] for c in keys if c.startswith("hp.") and not is_missing(first[c])}
        row["_spec"] = {c: (None if is_missing(first[c]) else first[c]) for c in SPEC_KEYS if c in first.index}
        rows.append(row)
    summary = pd.DataFrame(rows)
    if not summary.empty:
        summary = summary.sort_values(["suite", "scenario", "strategy", "config"], kind="stable").reset_index(drop=True)
    return summary


def representatives(summary: Any) -> Any:
    """One configuration per (suite, scenario, strategy): the one with the most completed runs."""
    if summary.empty:
        return summary
    ranked = summary.assign(_neg_n=-summary["n"]).sort_values(["suite", "scenario", "strategy", "_neg_n", "config"], kind="stable")
    return ranked.groupby(["suite", "scenario", "strategy"], sort=True).head(1).drop(columns="_neg_n")
