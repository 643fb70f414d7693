"""The cost of a verdict row, from the isolated measurement of `nlbench cost`, never from the runs' wall times.

The runs behind a report are often trained side by side on a loaded machine, and on CPU their peak
memory is a worker process's resident set, which grows with the worker's age: neither is a method's
cost. `nlbench cost` measures each strategy's training step in one process, interleaved in a seeded
order, in thread CPU time, with repeats, and counts each method's own bytes (parameters, gradients,
optimizer and clock state, buffers, stored logits); its files are read here (`nlbench.core.cost`). A
row's cost is the method's median step time over the reference's, measured in the same cost file
(same setting), and the difference of their state bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nlbench.commands.report.labels import label


def options_key(value: Any) -> str:
    """Suite options as the report labels them ("default" when none), from a dict, JSON text or a label."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value or "default"
        value = parsed
    if isinstance(value, dict):
        return label(value)
    return "default" if value in (None, "", "-") else str(value)


def load_cost_table(results_dir: Path) -> Any:
    """Every cost measurement under `results_dir` (an empty frame when there is none)."""
    import pandas as pd

    from nlbench.core.cost import load_costs

    costs = load_costs(Path(results_dir))
    if costs is None or len(costs) == 0:
        return pd.DataFrame()
    costs = costs.copy()
    costs["_options"] = [options_key(v) for v in costs["suite_options"]]
    return costs


def pair_cost(costs: Any, suite: str, options: str, scenario: str, method: str, reference: str) -> dict[str, Any] | None:
    """{step_ratio, bytes_diff, device} of method vs reference in one setting, or None when not measured."""
    if costs is None or len(costs) == 0:
        return None
    here = costs[(costs["suite"] == suite) & (costs["_options"] == options_key(options)) & (costs["scenario"] == scenario)]
    a, b = here[here["strategy"] == method], here[here["strategy"] == reference]
    if a.empty or b.empty:
        return None
    from nlbench.core.cost import summarise_ratio

    a, b = a.iloc[-1], b.iloc[-1]
    # the rounds were interleaved, so round r of both strategies shared the machine's state: pair them
    ratio = summarise_ratio(a["step_time_s"], b["step_time_s"], "iqr", seed=0)
    return {"step_ratio": ratio["median"], "low": ratio["low"], "high": ratio["high"],
            "bytes_diff": int(a["state_bytes_total"]) - int(b["state_bytes_total"]),
            "method_bytes": int(a["state_bytes_total"]), "device": a.get("device", "")}


def describe_cost(cost: dict[str, Any] | None) -> str:
    if cost is None:
        return "cost not measured (`nlbench cost`)"
    mb = cost["bytes_diff"] / 2**20
    return (f"step time x{cost['step_ratio']:.2f} (IQR {cost['low']:.2f}-{cost['high']:.2f}, paired rounds), "
            f"state {mb:+.2f} MB")
