"""Verdicts: does a Nested Learning method beat its controls and Adam? Paired statistics over seeds.

Pairs. In each setting (suite, suite options, scenario, head, backbone, epochs, batch size, protocol),
every strategy with a Nested Learning component (registry family `nested-learning`) is compared with
the strategies that swap that component for:
- its own controls: registered strategies of family `control` named `<method>-<kind>` (`cms-sync`,
  `cms-frozen`, `clocked-adam-sync`);
- the generic two-timescale references (family `control` without a method prefix: `lookahead`, `ademamix`);
- Adam: the strategy without the NL component (`cms+replay` -> `replay`, which trains with Adam), or `adam`;
- for `cms`, whose network is larger than the suite's, `adam-matched`: a plain MLP of about its parameter
  count trained with Adam, so "cms beats adam" splits into the network and the clock.
A pair is shown when both strategies have completed runs in the setting. One configuration per strategy
enters: the tuned one (a run listed in a `selection.json` written by `nlbench tune`), else the one with
the most completed runs. Runs pair by seed.

Pre-declared families (one Holm family per family and metric):
- primary: each clocked method against its own controls (sync, frozen), in a setting where every level
  of both sides' clocks updated at least `MIN_UPDATES` times over the stream (in regime,
  `nlbench.commands.report.clock_regime`), and, when primary settings are declared (`primary`, e.g.
  `nlbench report --primary permuted-fmnist,rotated-fmnist`), only in those settings. This is the
  question the project asks: does the clock help? Declaring them keeps a sanity row or a secondary
  setting from entering (and diluting) the primary Holm family just because its clocks ticked.
- secondary (exploratory): every other row, and primary rows that are off-regime (marked with the
  level that did not tick) or outside the declared settings. They are tested in their own family.

Per pair and metric (ACC, forgetting, learning accuracy; percentage points), over the n paired seeds:
d_s = method_s - reference_s; the printed interval is the unadjusted 95% Student-t interval of the mean;
p is the paired two-sided t-test (scipy.stats.ttest_rel) and `p_holm` its Holm-adjusted value in its
family (statsmodels multipletests); `mde` the minimum detectable effect at 80% power at the family's
Bonferroni level alpha/m, from the row's paired sd and n (`nlbench.commands.report.power`); `tost_p` the
paired TOST p against +-MARGIN points and `tost_p_holm` its Holm value in the same family.

One inference decides each verdict word: the family-adjusted tests. Holm p < 0.05: the direction
("higher ACC", "forgets less"); else TOST Holm p < 0.05: "equivalent (within +-1 pt)"; else "no
detectable difference (MDE x pt)". n < 2 gives no interval and no test. Time and memory are not
judged from the runs (they ran side by side on a loaded machine): cost comes from `nlbench cost`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nlbench.commands.report.clock_regime import pair_note
from nlbench.commands.report.power import MARGIN, mde, tost_p

SETTING = ("suite", "suite_options", "scenario", "head", "backbone", "epochs", "batch_size", "protocol")
# metric column -> (label, sign of "better": +1 higher is better, -1 lower is better)
COMPARED = {
    "acc": ("ACC", +1),
    "forgetting": ("Forgetting", -1),
    "learning_acc": ("Learning acc", +1),
}
ALPHA = 0.05
NO_DIFFERENCE = "no detectable difference"
EQUIVALENT = f"equivalent (within ±{MARGIN:g} pt)"
FAMILIES = ("primary", "secondary")
# An NL method whose network is larger than the suite's -> the plain network of about its parameter count
PARAM_MATCHED = {"cms": "adam-matched"}


Primary = tuple[tuple[str, "str | None"], ...]  # declared primary settings: (suite, scenario or None = any)


def parse_primary(text: str) -> Primary:
    """`SUITE[:SCENARIO],...` -> declared primary settings; `UserError` on an unknown suite or scenario."""
    from nlbench.data.suites import SUITES
    from nlbench.errors import UserError

    declared = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        suite, _, scenario = item.partition(":")
        if suite not in SUITES:
            raise UserError(f"--primary: unknown suite {suite!r}; known: {', '.join(sorted(SUITES))}")
        if scenario and scenario not in SUITES[suite].scenarios:
            raise UserError(f"--primary: suite {suite} has no scenario {scenario!r}; "
                            f"it has {', '.join(SUITES[suite].scenarios)}")
        if (suite, scenario or None) in declared:
            raise UserError(f"--primary: {item} is named twice")
        declared.append((suite, scenario or None))
    if not declared:
        raise UserError("--primary: name at least one suite, as SUITE[:SCENARIO],...")
    return tuple(declared)


def declared_primary(primary: Primary | None, suite: str, scenario: str) -> bool:
    """Whether a setting of `suite` in `scenario` is a declared primary setting (every one when none is declared)."""
    return primary is None or any(s == suite and c in (None, scenario) for s, c in primary)


def describe_primary(primary: Primary | None) -> str:
    """The declared primary settings in words, for the report."""
    if primary is None:
        return "not declared (every setting where a clocked method and its controls are in regime is primary)"
    return ", ".join(s + (f" ({c})" if c else "") for s, c in primary) + " (declared with `nlbench report --primary`)"


def tuned_run_ids(results_dir: Path) -> set[str]:
    """Run ids of the test runs that `nlbench tune` chose (every selection.json under the results)."""
    from nlbench.commands.report.tuning import selection_entries

    ids: set[str] = set()
    for _, entry in selection_entries(results_dir):
        ids.update(str(i) for i in entry.get("test_run_ids") or [])
    return ids


def _families() -> dict[str, str]:
    from nlbench.core.registry import strategies

    return {name: info.family for name, info in strategies().items()}


def references(strategy: str, families: dict[str, str]) -> list[tuple[str, str]]:
    """(reference strategy, kind) pairs for every NL component of `strategy`; kind: control, two-timescale, adam."""
    parts = strategy.split("+")
    generic = [n for n, f in families.items() if f == "control"
               and not any(n.startswith(f"{m}-") for m, g in families.items() if g == "nested-learning")]
    pairs: list[tuple[str, str]] = []
    for i, part in enumerate(parts):
        if families.get(part) != "nested-learning":
            continue
        own = [n for n, f in families.items() if f == "control" and n.startswith(f"{part}-")]
        for control, kind in [(c, "control") for c in sorted(own)] + [(c, "two-timescale") for c in sorted(generic)]:
            pairs.append(("+".join(parts[:i] + [control] + parts[i + 1:]), kind))
        rest = parts[:i] + parts[i + 1:]
        pairs.append(("+".join(rest) if rest else "adam", "adam"))
        matched = PARAM_MATCHED.get(part)
        if matched in families and not rest:  # the network's size without its architecture or its clock
            pairs.append((matched, "param-matched"))
    return pairs


def _setting_columns(frame: Any) -> list[str]:
    return [f"_k_{c}" for c in SETTING if f"_k_{c}" in frame]


def _chosen_runs(runs: Any, tuned: set[str]) -> Any:
    """Completed runs of one configuration per (setting, strategy): the tuned one, else the largest."""
    import pandas as pd

    completed = runs[runs["status"] == "completed"].copy()
    if completed.empty:
        return completed
    completed["_tuned"] = completed["run_id"].isin(tuned)
    keep = []
    for _, block in completed.groupby(_setting_columns(completed) + ["strategy"], sort=True):
        configs = block.groupby("config", sort=True).agg(tuned=("_tuned", "any"), n=("run_id", "size"))
        best = configs.sort_values(["tuned", "n"], ascending=[False, False], kind="stable").index[0]
        keep.append(block[block["config"] == best])
    return pd.concat(keep, ignore_index=True)


def pair_by_seed(ours: Any, theirs: Any) -> Any:
    """`ours` and `theirs` joined on seed (columns of `theirs` suffixed `_ref`), one run per seed on each side.
    Two stored runs of one configuration and seed are one experiment: a tuned run at periods 1,8,64 and a
    period-axis run written 1,e/8,e that resolves to the same periods have different run ids, and joining
    both would pair every seed twice and double n. The tuned run is kept (`_tuned`, where the caller marked it),
    else the one with the smallest run id."""
    def once(side: Any) -> Any:
        keys, ascending = (["seed", "_tuned", "run_id"], [True, False, True]) if "_tuned" in side else (["seed", "run_id"], True)
        return side.sort_values(keys, ascending=ascending, kind="stable").drop_duplicates("seed", keep="first")

    return once(ours).merge(once(theirs), on="seed", suffixes=("", "_ref"))


def paired_stats(a: Any, b: Any) -> dict[str, Any]:
    """n, mean difference (points), unadjusted 95% t-interval, paired t-test p, sd and TOST p."""
    import numpy as np
    from scipy import stats

    a, b = 100 * np.asarray(a, dtype=float), 100 * np.asarray(b, dtype=float)
    d = a - b
    n = int(len(d))
    row = {"n": n, "estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "sd": math.nan,
           "tost_p": math.nan}
    if n == 0:
        return row
    mean = float(d.mean())
    row["estimate"] = mean
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
        row.update(ci_low=mean - half, ci_high=mean + half, sd=sd, tost_p=tost_p(d.tolist()))
        # a constant difference (sd 0, up to rounding) has no t statistic: p is 1 at 0 and 0 elsewhere
        row["p"] = float(stats.ttest_rel(a, b).pvalue) if sd > 1e-12 * max(1.0, abs(mean)) else float(mean == 0)
    return row


def verdict_word(row: dict[str, Any], sign: int, label: str) -> str:
    """The word the family-adjusted tests decide (see the module docstring)."""
    if row["n"] < 2 or math.isnan(row["ci_low"]):
        return f"n={row['n']}: no interval"
    if not math.isnan(row["p_holm"]) and row["p_holm"] < ALPHA:
        better = row["estimate"] * sign > 0
        if label == "Forgetting":
            return "forgets less" if better else "forgets more"
        return f"{'higher' if row['estimate'] > 0 else 'lower'} {label}"
    if not math.isnan(row["tost_p_holm"]) and row["tost_p_holm"] < ALPHA:
        return EQUIVALENT
    shown = "" if math.isnan(row["mde"]) else f" (MDE {row['mde']:.1f} pt)"
    return NO_DIFFERENCE + shown


def _clocked(block: Any) -> bool:
    return bool(block["slowest_period"].notna().any()) if "slowest_period" in block else False


def _setting_text(first: Any) -> str:
    """What sets this setting apart from the suite's defaults: its options, then any field that differs
    ("n_tasks=10,test_per_task=2000,train_per_task=10000, batch_size=32"); "" at the defaults."""
    from nlbench.data.suites import SUITES

    suite = SUITES.get(first["suite"])
    defaults = {} if suite is None else {"backbone": suite.backbone, "epochs": str(suite.epochs),
                                         "batch_size": str(suite.batch_size),
                                         "head": suite.default_head(first["scenario"])}
    parts = []
    for c in SETTING[1:]:
        value = first.get(f"_k_{c}", "-")
        if c == "scenario" or value in ("-", "default") or str(defaults.get(c, "")) == str(value):
            continue
        parts.append(value if c == "suite_options" else f"{c}={value}")
    return ", ".join(parts)


def _clock_position(block: Any) -> dict[str, float]:
    """The method's slowest period, that period over the experience length, and its updates over the
    stream (medians over the method's runs; NaN without a clock)."""
    if not _clocked(block):
        return {"slowest_period": math.nan, "period_over_e": math.nan, "slowest_updates": math.nan}
    ratio = (block["slowest_period"] / block["experience_length"]).median()
    return {"slowest_period": float(block["slowest_period"].median()), "period_over_e": float(ratio),
            "slowest_updates": float(block["slowest_updates"].median())}


def compute_verdicts(runs: Any, results_dir: Path, primary: Primary | None = None) -> Any:
    """One row per (setting, method, reference, metric) with family, regime note, n, estimate, CI, p,
    Holm p, MDE, TOST p and the verdict word. `primary`: the declared primary settings (None: every setting)."""
    import pandas as pd
    from statsmodels.stats.multitest import multipletests

    from nlbench.commands.report.clock_regime import add_regime

    if "slowest_period" not in runs:
        add_regime(runs)
    if "config_label" not in runs:
        from nlbench.commands.report.config_labels import add_config_labels

        add_config_labels(runs, tuned_run_ids(results_dir))
    chosen = _chosen_runs(runs, tuned_run_ids(results_dir))
    columns = ["suite", "scenario", "setting", "suite_options", "method", "method_config", "reference", "reference_config",
               "kind", "family", "regime", "slowest_period", "period_over_e", "slowest_updates", "metric", "n", "estimate", "ci_low", "ci_high", "p", "sd", "tost_p",
               "p_holm", "mde", "tost_p_holm", "verdict"]
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    families = _families()
    rows = []
    for _, block in chosen.groupby(_setting_columns(chosen), sort=True):
        by_strategy = {s: g for s, g in block.groupby("strategy")}
        first = block.iloc[0]
        setting = _setting_text(first)
        for method in sorted(by_strategy):
            for reference, kind in references(method, families):
                if reference not in by_strategy:
                    continue
                ours, theirs = by_strategy[method], by_strategy[reference]
                merged = pair_by_seed(ours, theirs)
                note = pair_note(ours[ours["seed"].isin(merged["seed"])], theirs[theirs["seed"].isin(merged["seed"])])
                family = ("primary" if kind == "control" and _clocked(ours) and not note
                          and declared_primary(primary, first["suite"], first["scenario"]) else "secondary")
                clock = _clock_position(ours)
                for metric in COMPARED:
                    stats_row = paired_stats(merged[metric], merged[f"{metric}_ref"])
                    rows.append({"suite": first["suite"], "scenario": first["scenario"], "setting": setting,
                                 "suite_options": first.get("_k_suite_options", "-"), "method": method,
                                 "method_config": ours["config_label"].iloc[0], "reference": reference,
                                 "reference_config": theirs["config_label"].iloc[0], "kind": kind, "family": family,
                                 "regime": note, **clock, "metric": metric, **stats_row})
    table = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "mde", "tost_p_holm", "verdict")])
    for column in ("p_holm", "mde", "tost_p_holm"):
        table[column] = math.nan
    for (_, _), index in table.groupby(["family", "metric"]).groups.items():
        index = list(index)
        for raw, adjusted in (("p", "p_holm"), ("tost_p", "tost_p_holm")):
            valid = [i for i in index if not math.isnan(table.at[i, raw])]
            if valid:
                table.loc[valid, adjusted] = multipletests(table.loc[valid, raw].to_numpy(), alpha=ALPHA, method="holm")[1]
        m = max(1, sum(not math.isnan(table.at[i, "p"]) for i in index))
        for i in index:
            table.at[i, "mde"] = mde(table.at[i, "sd"], int(table.at[i, "n"]), ALPHA / m)
    table["verdict"] = [verdict_word(r, COMPARED[r["metric"]][1], COMPARED[r["metric"]][0]) for r in table.to_dict("records")]
    order = {f: i for i, f in enumerate(FAMILIES)}
    return table.sort_values(["family", "suite", "scenario", "setting", "method", "reference"],
                             key=lambda s: s.map(order) if s.name == "family" else s, kind="stable").reset_index(drop=True)
