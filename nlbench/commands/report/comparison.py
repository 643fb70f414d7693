"""Our configurations beside published numbers (`baselines/published.csv`), one row per pair.

The mapping of published rows onto nlbench's suites, strategies and metrics, and the protocol check,
are `nlbench.commands.report.published`; this module only pairs them with the aggregated summary.
"""

from __future__ import annotations

import math
from typing import Any

from nlbench.commands.report.labels import is_missing


def compare_published(summary: Any, published: Any) -> Any:
    """Our configurations beside every published row with the same suite, scenario and strategy.

    A published row whose identifying hyperparameters (e.g. `ewc_mode=online` for oEWC, `der_beta=0`
    for DER) contradict the configuration's is a different method and is not paired. Each pair says
    whether the protocol matches (`nlbench.commands.report.published.protocol_matches`) and why.
    """
    import pandas as pd

    from nlbench.core.protocols import method_matches
    from nlbench.commands.report.published import protocol_matches

    columns = ["suite", "scenario", "strategy", "config", "method", "metric", "n", "ours_mean", "ours_ci95", "published",
               "published_std", "spread", "difference", "comparable", "reason", "source", "source_detail"]
    if summary.empty:
        return pd.DataFrame(columns=columns)
    usable = published[(published["suite"] != "") & (published["scenario"] != "") & (published["strategy"] != "") & (published["metric"] != "")]
    rows = []
    for _, ours in summary.iterrows():
        candidates = usable[(usable["suite"] == ours["suite"]) & (usable["scenario"] == ours["scenario"]) & (usable["strategy"] == ours["strategy"])]
        for _, row in candidates.iterrows():
            if not method_matches(row["method_hparams"], ours["_hp"]):
                continue
            spec = {**ours["_spec"], "hparams": ours["_hp"]}
            ok, reason = protocol_matches(spec, row)
            mean = ours.get(f"{row['metric']}_mean", math.nan)
            rows.append({
                "suite": ours["suite"], "scenario": ours["scenario"], "strategy": ours["strategy"], "config": ours["config"],
                "method": row["method"], "metric": row["metric"], "n": ours[f"{row['metric']}_n"],
                "ours_mean": mean, "ours_ci95": ours.get(f"{row['metric']}_ci95", math.nan),
                "published": row["value_frac"], "published_std": row["std_frac"], "spread": row["spread"],
                "difference": mean - row["value_frac"] if not is_missing(mean) else math.nan,
                "comparable": bool(ok), "reason": reason, "source": row["source"], "source_detail": row["source_detail"],
            })
    table = pd.DataFrame(rows, columns=columns)
    if not table.empty:
        table = table.sort_values(["comparable", "suite", "scenario", "strategy", "config", "method", "source"],
                                  ascending=[False, True, True, True, True, True, True], kind="stable").reset_index(drop=True)
    return table
