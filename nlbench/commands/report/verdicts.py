"""Verdicts: does a Nested Learning method beat its controls and Adam? Paired statistics over seeds.

Pairs. In each setting (suite, scenario, head, backbone, epochs, batch size, protocol), every strategy
with a Nested Learning component (registry family `nested-learning`) is compared with the strategies
that swap that component for:
- its own controls: registered strategies of family `control` named `<method>-<kind>` (`cms-sync`,
  `cms-frozen`, `clocked-adam-sync`);
- the generic two-timescale controls (family `control` without a method prefix: `lookahead`, `ademamix`);
- Adam: the strategy without the NL component (`cms+replay` -> `replay`, which trains with Adam), or
  `adam` itself.
A pair is shown only when both strategies have completed runs in the setting. One configuration per
strategy enters: the tuned one (a run listed in a `selection.json` written by `nlbench tune`), else the
configuration with the most completed runs. Runs pair by seed (seeds both have).

Statistics, per pair and metric, over the n paired seeds:
- ACC, forgetting, learning accuracy: d_s = method_s - reference_s (percentage points); time per
  experience and peak memory: d_s = log(method_s / reference_s), shown as the ratio exp(mean d);
- 95% interval: Student t, mean(d) ± t(0.975, n-1) sd(d)/sqrt(n) (scipy.stats.t);
- paired two-sided t-test (scipy.stats.ttest_rel, on the logs for ratios);
- Holm's step-down correction (statsmodels multipletests) across every comparison of the same metric
  shown in the table (one family per metric);
- "no detectable difference" whenever the interval covers 0 (ratio 1); a difference whose interval
  excludes 0 but whose Holm-corrected p is >= 0.05 is reported as "not significant after Holm".
n < 2 gives no interval and no test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

SETTING = ("suite", "scenario", "head", "backbone", "epochs", "batch_size", "protocol")
# metric column -> (label, kind, sign of "better": +1 higher is better, -1 lower is better)
COMPARED = {
    "acc": ("ACC", "diff", +1),
    "forgetting": ("Forgetting", "diff", -1),
    "learning_acc": ("Learning acc", "diff", +1),
    "time_per_exp_s": ("Time ratio", "ratio", -1),
    "peak_memory_mb": ("Memory ratio", "ratio", -1),
}
ALPHA = 0.05
NO_DIFFERENCE = "no detectable difference"


def tuned_run_ids(results_dir: Path) -> set[str]:
    """Run ids of the test runs that `nlbench tune` chose (every selection.json under the results)."""
    import json

    ids: set[str] = set()
    for path in Path(results_dir).rglob("selection.json"):
        try:
            entries = json.loads(path.read_text()).get("selections", [])
        except (OSError, ValueError, AttributeError):
            continue
        for entry in entries if isinstance(entries, list) else []:
            ids.update(str(i) for i in (entry.get("test_run_ids") or []) if isinstance(entry, dict))
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
    return pairs


def _chosen_runs(runs: Any, tuned: set[str]) -> Any:
    """Completed runs of one configuration per (setting, strategy): the tuned one, else the largest."""
    import pandas as pd

    completed = runs[runs["status"] == "completed"].copy()
    if completed.empty:
        return completed
    completed["_tuned"] = completed["run_id"].isin(tuned)
    keep = []
    for _, block in completed.groupby([f"_k_{c}" for c in SETTING if f"_k_{c}" in completed] + ["strategy"], sort=True):
        configs = block.groupby("config", sort=True).agg(tuned=("_tuned", "any"), n=("run_id", "size"))
        best = configs.sort_values(["tuned", "n"], ascending=[False, False], kind="stable").index[0]
        keep.append(block[block["config"] == best])
    return pd.concat(keep, ignore_index=True)


def _paired_stats(a: Any, b: Any, kind: str) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if kind == "ratio":
        ok = (a > 0) & (b > 0)
        a, b = np.log(a[ok]), np.log(b[ok])
    else:
        a, b = 100 * a, 100 * b  # percentage points
    d = a - b
    n = int(len(d))
    row = {"n": n, "estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    if n == 0:
        return row
    mean = float(d.mean())
    row["estimate"] = mean
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
        row["ci_low"], row["ci_high"] = mean - half, mean + half
        # a constant difference (sd 0, up to rounding) has no t statistic: p is 1 at 0 and 0 elsewhere
        row["p"] = float(stats.ttest_rel(a, b).pvalue) if sd > 1e-12 * max(1.0, abs(mean)) else float(mean == 0)
    if kind == "ratio":
        row.update({k: math.exp(row[k]) for k in ("estimate", "ci_low", "ci_high") if not math.isnan(row[k])})
    return row


def _verdict(row: dict[str, Any], kind: str, sign: int, label: str) -> str:
    null = 1.0 if kind == "ratio" else 0.0
    if row["n"] < 2 or math.isnan(row["ci_low"]):
        return f"n={row['n']}: no interval"
    if row["ci_low"] <= null <= row["ci_high"]:
        return NO_DIFFERENCE
    better = (row["estimate"] - null) * sign > 0
    if kind == "ratio":
        word = ("cheaper" if better else "costlier") + f" (x{row['estimate']:.2f})"
    elif label == "Forgetting":
        word = "forgets less" if better else "forgets more"
    else:
        word = f"{'higher' if row['estimate'] > 0 else 'lower'} {label}"
    if not math.isnan(row["p_holm"]) and row["p_holm"] < ALPHA:
        return word
    return f"{word}? not significant after Holm"


def compute_verdicts(runs: Any, results_dir: Path) -> Any:
    """One row per (setting, method, reference, metric) with n, estimate, 95% CI, p, Holm p and verdict."""
    import pandas as pd
    from statsmodels.stats.multitest import multipletests

    chosen = _chosen_runs(runs, tuned_run_ids(results_dir))
    columns = ["suite", "scenario", "setting", "method", "method_config", "reference", "reference_config", "kind",
               "metric", "n", "estimate", "ci_low", "ci_high", "p", "p_holm", "verdict"]
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    families = _families()
    rows = []
    for key, block in chosen.groupby([f"_k_{c}" for c in SETTING if f"_k_{c}" in chosen], sort=True):
        by_strategy = {s: g for s, g in block.groupby("strategy")}
        first = block.iloc[0]
        setting = ", ".join(f"{c}={first[f'_k_{c}']}" for c in SETTING[2:] if f"_k_{c}" in block and first[f"_k_{c}"] != "-")
        for method in sorted(by_strategy):
            for reference, kind in references(method, families):
                if reference not in by_strategy:
                    continue
                merged = by_strategy[method].merge(by_strategy[reference], on="seed", suffixes=("", "_ref"))
                for metric, (label, how, sign) in COMPARED.items():
                    stats_row = _paired_stats(merged[metric], merged[f"{metric}_ref"], how) if len(merged) else \
                        {"n": 0, "estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
                    rows.append({"suite": first["suite"], "scenario": first["scenario"], "setting": setting,
                                 "method": method, "method_config": by_strategy[method]["config"].iloc[0],
                                 "reference": reference, "reference_config": by_strategy[reference]["config"].iloc[0],
                                 "kind": kind, "metric": metric, **stats_row})
    table = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "verdict")])
    table["p_holm"] = math.nan
    for metric, index in table.groupby("metric").groups.items():
        valid = [i for i in index if not math.isnan(table.at[i, "p"])]
        if valid:
            table.loc[valid, "p_holm"] = multipletests(table.loc[valid, "p"].to_numpy(), alpha=ALPHA, method="holm")[1]
    table["verdict"] = [_verdict(r, COMPARED[r["metric"]][1], COMPARED[r["metric"]][2], COMPARED[r["metric"]][0])
                        for r in table.to_dict("records")]
    return table


def _cell(row: Any) -> str:
    if row is None or row["n"] == 0:
        return "-"
    ratio = COMPARED[row["metric"]][1] == "ratio"
    fmt = (lambda v: f"x{v:.2f}") if ratio else (lambda v: f"{v:+.1f}")
    if math.isnan(row["ci_low"]):
        return fmt(row["estimate"])
    p = "" if math.isnan(row["p_holm"]) else f" (p={row['p_holm']:.3g})"
    return f"{fmt(row['estimate'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]{p}"


def forest_plot(table: Any, path: Path) -> None:
    """Paired differences with their 95% intervals, one panel per metric, one row per comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in COMPARED if m != "learning_acc"]
    pairs = table.drop_duplicates(["suite", "scenario", "setting", "method", "reference"])
    labels = [f"{r.suite}/{r.scenario}: {r.method} vs {r.reference}" for r in pairs.itertuples()]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown) + 3, 0.32 * len(labels) + 1.4), sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], shown):
        label, kind, _ = COMPARED[metric]
        null = 1.0 if kind == "ratio" else 0.0
        for y, r in enumerate(pairs.itertuples()):
            row = table[(table["suite"] == r.suite) & (table["scenario"] == r.scenario) & (table["setting"] == r.setting)
                        & (table["method"] == r.method) & (table["reference"] == r.reference) & (table["metric"] == metric)]
            if row.empty or math.isnan(row["estimate"].iloc[0]):
                continue
            est, lo, hi = (float(row[c].iloc[0]) for c in ("estimate", "ci_low", "ci_high"))
            covers = math.isnan(lo) or lo <= null <= hi
            color = "0.55" if covers else "tab:red"
            if not math.isnan(lo):
                ax.plot([lo, hi], [y, y], color=color, lw=1.6)
            ax.plot([est], [y], "o", color=color, ms=4)
        ax.axvline(null, color="black", lw=0.8, ls="--")
        if kind == "ratio":
            ax.set_xscale("log")
        ax.set_title(label + (" (method / reference)" if kind == "ratio" else " difference (pp)"), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)))
    axes[0][0].set_yticklabels(labels, fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle("Paired differences, 95% t-intervals (grey: interval covers no difference)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdicts_section(runs: Any, results_dir: Path, out: Path, write_csv: Callable[[Any, str], Path],
                     figures: list[Path]) -> list[str]:
    """Compute the verdicts, write tables/verdicts.csv and figures/verdicts_forest.png, return report.md lines."""
    table = compute_verdicts(runs, results_dir)
    lines = ["## Verdicts", ""]
    if table.empty:
        return lines + ["No Nested Learning method has a control or Adam run in the same setting: nothing to pair.", ""]
    write_csv(table, "verdicts.csv")
    figure = out / "figures" / "verdicts_forest.png"
    forest_plot(table, figure)
    figures.append(figure)
    lines.append("Each Nested Learning method against its controls (same network without the clock), the two-timescale "
                 "optimizers Lookahead and AdEMAMix, and Adam, paired by seed in the same setting. Cells: mean paired "
                 "difference (method - reference; percentage points) or ratio (method / reference, geometric mean), "
                 "[95% Student-t interval], (Holm-corrected p of a paired t-test; one Holm family per metric, over every "
                 "row of this table). Tuned configurations are used where `nlbench tune` chose one. "
                 f"\"{NO_DIFFERENCE}\": the interval covers 0 (ratio 1).")
    lines += ["", "![verdicts](figures/verdicts_forest.png)", ""]
    headers = ["suite", "scenario", "method", "vs", "n", *(COMPARED[m][0] for m in COMPARED), "verdict (ACC; forgetting)"]
    body = []
    for _, pair in table.groupby(["suite", "scenario", "setting", "method", "reference"], sort=True):
        cells = {r["metric"]: r for r in pair.to_dict("records")}
        first = pair.iloc[0]
        verdict = f"{cells['acc']['verdict']}; {cells['forgetting']['verdict']}"
        body.append([first["suite"], first["scenario"] + (f" ({first['setting']})" if first["setting"] else ""),
                     first["method"], f"{first['reference']} ({first['kind']})", int(cells["acc"]["n"]),
                     *(_cell(cells.get(m)) for m in COMPARED), verdict])
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return lines + ["", "All rows, with uncorrected p-values: tables/verdicts.csv.", ""]
