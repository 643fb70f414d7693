"""The report's vocabulary: which metrics and spec fields it reads, and how a value is written.

Every number and setting the report shows goes through these helpers, so a value reads the same in
report.md, the CSV tables and the figures: accuracies as percentages with one decimal, `mean ± CI`
(a single run has no interval and shows its value alone), hyperparameters as short stable labels, "-"
for anything absent.
Standard library only.
"""

from __future__ import annotations

import math
import re
from typing import Any

METRICS = ("acc", "forgetting", "bwt", "avg_inc_acc", "learning_acc", "fwt")
LABELS = {
    "acc": "ACC",
    "forgetting": "Forgetting",
    "bwt": "BWT",
    "avg_inc_acc": "Avg inc. acc",
    "learning_acc": "Learning acc",
    "fwt": "FWT",
}
# eval_every and probes change what a run measures, not what it trains: runs with them still form their own
# configurations, so that a measurement run at the defaults is not read as a point of an lr sweep beside
# the tuned runs of the same setting.
SPEC_KEYS = ("suite", "scenario", "head", "backbone", "strategy", "epochs", "batch_size", "protocol", "suite_options",
             "eval_every", "probes")
MISSING = "-"


def is_missing(value: Any) -> bool:
    """None, NaN, "" and "-" all mean "no value" (pandas turns absent cells into NaN, labels into "-")."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value in ("", MISSING)


def label(value: Any) -> str:
    """A hyperparameter or spec value as a short, stable label ("-" when absent)."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(label(v) for v in value) + ")"
    if isinstance(value, dict):  # suite options: only the ones set are stored
        return ",".join(f"{k}={label(v)}" for k, v in sorted(value.items())) or "default"
    return str(value)


def sort_key(value: Any) -> tuple:
    """Numbers (and tuples of numbers) in numeric order, then strings, then missing values."""
    if is_missing(value):
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, (list, tuple)):
        return (0, tuple(float(v) if isinstance(v, (int, float)) else 0 for v in value), len(value))
    return (1, str(value))


def pct(value: Any, digits: int = 1) -> str:
    return MISSING if is_missing(value) else f"{100 * float(value):.{digits}f}"


def mean_ci(mean: Any, ci: Any) -> str:
    """'51.3 ± 2.0' in percent; '51.3' alone when there is no interval (one seed)."""
    if is_missing(mean):
        return MISSING
    return f"{pct(mean)} ± {pct(ci)}" if not is_missing(ci) else pct(mean)


def seeds_phrase(summary: Any) -> str:
    """How the tables' values come about: 'mean ± 95% CI over seeds', or plainly one seed when every
    configuration has n=1 (then nothing is a mean and no interval exists)."""
    if len(summary) and int(summary["n"].max()) == 1:
        return "one seed per configuration (n=1): single-run values, no interval"
    if len(summary) and int(summary["n"].min()) == 1:
        return "mean ± 95% CI over seeds (a configuration with one seed shows its single value)"
    return "mean ± 95% CI over seeds"


def slug(text: str) -> str:
    """A file-name-safe stem ("+" kept readable as "-plus-")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("+", "-plus-")).strip("_") or "x"


def scenario_title(suite: str, scenario: str) -> str:
    return f"{suite}, {scenario}-incremental"
