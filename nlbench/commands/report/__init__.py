"""`nlbench report`: stored runs -> tables over seeds, figures, and published numbers side by side.

`build_report(results_dir, out)` reads every finished run under `results_dir` (recursively, through
`nlbench.core.store.load_results`), and writes into `out`:

- `report.md`: what was run, the metric definitions, the main table (mean ± 95% CI over seeds per
  configuration), the published comparison, sweep heatmaps, failed/diverged and skipped runs, notes;
- `tables/*.csv`: `runs.csv` (one row per run), `summary.csv` (one row per configuration: mean, std,
  ci95 and n of every metric), `published_comparison.csv`, `failed_runs.csv`, `skipped_runs.csv`,
  `sweep_*.csv`. Accuracies in the CSV files are fractions in [0, 1], as stored; report.md and the
  figures show percentages;
- `figures/*.png`: ACC and forgetting per configuration with CIs, the mean accuracy matrix of each
  strategy, accuracy on each experience over training, sweep heatmaps, and the cost panel.

Aggregation. Runs are grouped by suite, scenario, head, backbone, strategy, epochs, batch size,
protocol and every `hp.<key>` (a key a strategy does not declare counts as "-"), so one group is one
configuration and its runs differ only in the seed. Only runs with status `completed` enter the
statistics; diverged and failed runs are listed with the first line of their error. For n runs:
mean, sample std (ddof=1), and the 95% confidence interval of the mean, mean ± t(0.975, n-1)·std/√n
(Student t, scipy.stats; n=1 has no interval). Seeds change the model initialisation and data order,
not the class order, so the interval covers that variation only.

This module imports only the standard library and Typer at module level (the CLI imports it at
startup); pandas, numpy, seaborn and matplotlib (Agg backend) are imported inside the functions.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


__all__ = ["ReportSummary", "SweepGrid", "build_report", "report_command", "t_critical", "find_sweeps", "DEFAULT_SWEEP_AXES"]

METRICS = ("acc", "forgetting", "bwt", "avg_inc_acc", "learning_acc", "fwt")
LABELS = {
    "acc": "ACC",
    "forgetting": "Forgetting",
    "bwt": "BWT",
    "avg_inc_acc": "Avg inc. acc",
    "learning_acc": "Learning acc",
    "fwt": "FWT",
}
SPEC_KEYS = ("suite", "scenario", "head", "backbone", "strategy", "epochs", "batch_size", "protocol")
DEFAULT_SWEEP_AXES = ("periods", "alpha")
MISSING = "-"
CONFIDENCE = 0.95


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


@dataclass
class ReportSummary:
    """What `build_report` wrote and what it found."""

    results_dir: Path
    out: Path
    report_md: Path
    tables: list[Path]
    figures: list[Path]
    n_runs: int  # readable finished runs
    n_completed: int
    n_not_completed: int  # diverged or failed: listed, never aggregated
    skipped: list[str]  # one message per corrupt or truncated run directory (names the file)
    unfinished: list[Path]  # run directories without a `done` marker (ignored)
    summary: Any  # DataFrame, one row per configuration
    comparison: Any  # DataFrame, our configurations beside published rows
    sweeps: list[SweepGrid] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Statistics and labels


def t_critical(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value for a mean of n samples (df = n-1); NaN for n < 2."""
    if n < 2:
        return math.nan
    from scipy import stats  # a dependency of scikit-learn, so always installed with nlbench

    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value in ("", MISSING)


def label(value: Any) -> str:
    """A hyperparameter or spec value as a short, stable label ("-" when absent)."""
    if _missing(value):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(label(v) for v in value) + ")"
    return str(value)


def _sort_key(value: Any) -> tuple:
    if _missing(value):
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, (list, tuple)):
        return (0, tuple(float(v) if isinstance(v, (int, float)) else 0 for v in value), len(value))
    return (1, str(value))


def pct(value: Any, digits: int = 1) -> str:
    return MISSING if _missing(value) else f"{100 * float(value):.{digits}f}"


def mean_ci(mean: Any, ci: Any) -> str:
    """'51.3 ± 2.0' in percent; 'n/a' for a missing CI (n=1)."""
    if _missing(mean):
        return MISSING
    return f"{pct(mean)} ± {pct(ci) if not _missing(ci) else 'n/a'}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("+", "-plus-")).strip("_") or "x"


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Loading


def load_runs(results_dir: Path) -> tuple[Any, list[str], list[Path]]:
    """(runs DataFrame, skip messages, unfinished run dirs); UserError when there is nothing to report.

    Adds to `store.load_results`' columns: `error` (first line), `time_per_exp_s` (mean training time
    per experience), `peak_memory_kind` and `device`, read from each run's result.json.
    """
    import numpy as np

    from nlbench.errors import UserError
    from nlbench.core.store import DONE, load_results, read_run

    root = Path(results_dir)
    if not root.exists():
        raise UserError(f"results directory {root} does not exist; run `nlbench run` first, or give the directory that holds the runs")
    if not root.is_dir():
        raise UserError(f"results directory {root} is not a directory")
    unfinished = sorted(p.parent for p in root.rglob("spec.json") if not (p.parent / DONE).exists())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_results(root)
    skipped = [str(w.message) for w in caught if str(w.message).startswith("skipping ")]
    for w in caught:
        if not str(w.message).startswith("skipping "):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if runs.empty:
        detail = f" ({len(skipped)} corrupt run(s) skipped: {'; '.join(skipped)})" if skipped else ""
        extra = f"; {len(unfinished)} unfinished run(s) without a '{DONE}' marker" if unfinished else ""
        raise UserError(f"no finished runs under {root}{detail}{extra}; run `nlbench run --out {root}` first")

    duplicated = runs["run_id"].duplicated(keep="first")
    for path in runs.loc[duplicated, "path"]:
        skipped.append(f"skipping {path}: same run id as another stored run (the same spec stored under two names); counted once")
    runs = runs.loc[~duplicated].reset_index(drop=True)

    errors, times, kinds, devices = [], [], [], []
    for path in runs["path"]:
        try:
            result = read_run(Path(path))[1]
        except ValueError:
            result = {}
        error = result.get("error")
        errors.append(str(error).strip().splitlines()[0] if error else "")
        train = [t for t in (result.get("experience_train_time_s") or []) if isinstance(t, (int, float))]
        times.append(float(np.mean(train)) if train else math.nan)
        kinds.append(result.get("peak_memory_kind", ""))
        devices.append(result.get("device", ""))
    runs["status"] = [s if isinstance(s, str) and s else "unknown" for s in runs["status"]]
    runs["error"] = errors
    runs["time_per_exp_s"] = times
    runs["peak_memory_kind"] = kinds
    runs["device"] = devices
    for metric in METRICS:
        if metric not in runs.columns:
            runs[metric] = math.nan
    return runs, skipped, unfinished


def unfinished_message(path: Path) -> str:
    return (f"skipping {path}: it has spec.json but no 'done' marker (a run that was killed or is still being "
            "written); not counted")


def _key_columns(runs: Any) -> list[str]:
    hp = sorted(c for c in runs.columns if c.startswith("hp."))
    return [c for c in SPEC_KEYS if c in runs.columns] + hp


def _add_labels(runs: Any, keys: list[str]) -> None:
    """`_k_<col>` label columns, a per-strategy `config` label and a display `group_label`."""
    for column in keys:
        runs[f"_k_{column}"] = [label(v) for v in runs[column]]
    configs = []
    varying: dict[tuple, list[str]] = {}
    for ident, block in runs.groupby(["suite", "scenario", "strategy"], sort=False):
        varying[ident] = [c for c in keys if c not in ("suite", "scenario", "strategy") and block[f"_k_{c}"].nunique() > 1]
    for _, row in runs.iterrows():
        cols = varying[(row["suite"], row["scenario"], row["strategy"])]
        configs.append("; ".join(f"{c.removeprefix('hp.')}={row[f'_k_{c}']}" for c in cols))
    runs["config"] = configs
    runs["group_label"] = [s if not c else f"{s} ({c})" for s, c in zip(runs["strategy"], runs["config"])]


# --------------------------------------------------------------------------------------------------
# Aggregation


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
        row: dict[str, Any] = {c: first[c] for c in ("suite", "scenario", "strategy", "config", "group_label")}
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
        row["_hp"] = {c[3:]: first[c] for c in keys if c.startswith("hp.") and not _missing(first[c])}
        row["_spec"] = {c: (None if _missing(first[c]) else first[c]) for c in SPEC_KEYS if c in first.index}
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


# --------------------------------------------------------------------------------------------------
# Published comparison


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
                "difference": mean - row["value_frac"] if not _missing(mean) else math.nan,
                "comparable": bool(ok), "reason": reason, "source": row["source"], "source_detail": row["source_detail"],
            })
    table = pd.DataFrame(rows, columns=columns)
    if not table.empty:
        table = table.sort_values(["comparable", "suite", "scenario", "strategy", "config", "method", "source"],
                                  ascending=[False, True, True, True, True, True, True], kind="stable").reset_index(drop=True)
    return table


# --------------------------------------------------------------------------------------------------
# Sweeps


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
            grids.append(SweepGrid(first["suite"], first["scenario"], first["strategy"], x, y, fixed, cells.reset_index(drop=True), _slug(name)))
    return grids


# --------------------------------------------------------------------------------------------------
# Figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _save(fig: Any, path: Path, figures: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    figures.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _palette(strategies: list[str]) -> dict[str, Any]:
    import seaborn as sns

    colors = sns.color_palette("tab10" if len(strategies) <= 10 else "husl", len(strategies))
    return dict(zip(strategies, colors))


def _scenario_title(suite: str, scenario: str) -> str:
    return f"{suite}, {scenario}-incremental"


def figure_acc_forgetting(summary: Any, runs: Any, suite: str, scenario: str, palette: dict, path: Path, figures: list[Path]) -> None:
    """Bars: mean ACC and forgetting per configuration, 95% t-CI error bars, one dot per seed."""
    import numpy as np
    from matplotlib.lines import Line2D

    plt, sns = _plt()
    sub = summary[(summary["suite"] == suite) & (summary["scenario"] == scenario)]
    order = list(sub["group_label"])
    seeds = runs[(runs["suite"] == suite) & (runs["scenario"] == scenario) & (runs["status"] == "completed")]
    width = max(8.0, 0.6 * len(order) + 3)
    fig, axes = plt.subplots(2, 1, figsize=(width, 8.5), sharex=True)
    for ax, metric in zip(axes, ("acc", "forgetting")):
        data = sub.assign(value=100 * sub[f"{metric}_mean"])
        sns.barplot(data=data, x="group_label", y="value", hue="strategy", order=order, hue_order=list(palette),
                    palette=palette, dodge=False, errorbar=None, ax=ax, legend=False)
        ci = 100 * sub[f"{metric}_ci95"].to_numpy(dtype=float)
        has_ci = np.isfinite(ci)  # n=1 has no interval: draw none rather than a zero-width one
        ax.errorbar(np.arange(len(order))[has_ci], data["value"].to_numpy(dtype=float)[has_ci], yerr=ci[has_ci],
                    fmt="none", ecolor="black", capsize=4, lw=1.2)
        points = seeds.assign(value=100 * seeds[metric].astype(float))
        sns.stripplot(data=points, x="group_label", y="value", order=order, color="black", size=3.5, jitter=0.15, ax=ax)
        ax.set_xlabel("strategy (configuration)" if metric == "forgetting" else "")
        ax.set_ylabel(f"{LABELS[metric]} (%)")
        ax.set_title({"acc": "Final average accuracy (ACC, GEM)", "forgetting": "Forgetting (Chaudhry et al.)"}[metric])
    axes[1].tick_params(axis="x", rotation=35)
    for tick in axes[1].get_xticklabels():
        tick.set_horizontalalignment("right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[s]) for s in palette if s in set(sub["strategy"])]
    names = [s for s in palette if s in set(sub["strategy"])]
    handles += [Line2D([], [], color="black", marker="o", ls="", ms=4), Line2D([], [], color="black", marker="_", ms=12)]
    names += ["one seed", "95% CI of the mean (Student t)"]
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.92), title="strategy")
    fig.suptitle(f"{_scenario_title(suite, scenario)}: ACC and forgetting, mean over seeds")
    fig.tight_layout()
    _save(fig, path, figures)


def figure_matrix(row: Any, path: Path, figures: list[Path]) -> None:
    """Annotated heatmap of one configuration's mean accuracy matrix R[i, j] (percent)."""
    import numpy as np

    plt, sns = _plt()
    matrix = 100 * np.asarray(row["_matrix"], dtype=float)
    T = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(1.1 * T + 2.5, 0.9 * T + 2))
    sns.heatmap(matrix, annot=True, fmt=".1f", vmin=0, vmax=100, cmap="viridis", square=True, ax=ax,
                cbar_kws={"label": "accuracy (%)"}, xticklabels=range(T), yticklabels=range(T))
    ax.set_xlabel("test experience j")
    ax.set_ylabel("after training on experience i")
    ax.set_title(f"{row['group_label']} on {_scenario_title(row['suite'], row['scenario'])}\n"
                 f"accuracy matrix R[i, j], mean of {row['n']} run(s); above the diagonal: not yet trained on",
                 fontsize=10)
    _save(fig, path, figures)


def figure_over_time(reps: Any, runs: Any, suite: str, scenario: str, path: Path, figures: list[Path]) -> None:
    """Accuracy on each test experience after each training experience, one panel per strategy."""
    import pandas as pd

    plt, sns = _plt()
    sub = reps[(reps["suite"] == suite) & (reps["scenario"] == scenario)]
    records = []
    for _, rep in sub.iterrows():
        ids = set(rep["run_ids"].split(","))
        for _, run in runs[runs["run_id"].isin(ids)].iterrows():
            initial = run["initial_accuracy"] if isinstance(run["initial_accuracy"], list) and run["initial_accuracy"] else None
            rows = [initial] + (list(run["matrix"]) if isinstance(run["matrix"], list) else [])
            for step, accs in enumerate(rows):
                if accs is None:
                    continue
                for j, acc in enumerate(accs):
                    records.append({"panel": rep["group_label"], "step": step, "test experience": f"exp {j}",
                                    "accuracy (%)": 100 * float(acc), "seed": run["seed"]})
    if not records:
        return
    data = pd.DataFrame(records)
    panels = list(dict.fromkeys(sub["group_label"]))
    grid = sns.relplot(data=data, x="step", y="accuracy (%)", hue="test experience", col="panel", col_order=panels,
                       col_wrap=min(3, len(panels)), kind="line", errorbar=None, marker="o", height=3.3, aspect=1.25,
                       palette="viridis", facet_kws={"sharey": True})
    grid.set_titles("{col_name}")
    grid.set_axis_labels("experiences trained on (0 = before training)", "accuracy (%)")
    for ax in grid.axes.flat:
        ax.set_ylim(-3, 103)
    grid.figure.suptitle(f"{_scenario_title(suite, scenario)}: accuracy on each experience over training (mean over seeds)", y=1.03)
    _save(grid.figure, path, figures)


def figure_cost(summary: Any, suite: str, scenario: str, palette: dict, path: Path, figures: list[Path]) -> None:
    """Training time per experience and peak memory against ACC, one point per configuration."""
    import numpy as np

    plt, sns = _plt()
    sub = summary[(summary["suite"] == suite) & (summary["scenario"] == scenario)].copy()
    sub["ACC (%)"] = 100 * sub["acc_mean"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, column, xlabel in ((axes[0], "time_per_exp_s", "training time per experience (s)"),
                               (axes[1], "peak_memory_mb", "peak memory (MB)")):
        has_ci = np.isfinite(sub["acc_ci95"].to_numpy(dtype=float))
        ax.errorbar(sub[column][has_ci], sub["ACC (%)"][has_ci], yerr=100 * sub["acc_ci95"][has_ci],
                    fmt="none", ecolor="grey", capsize=3, lw=1)
        sns.scatterplot(data=sub, x=column, y="ACC (%)", hue="strategy", hue_order=[s for s in palette if s in set(sub["strategy"])],
                        palette=palette, s=70, ax=ax, legend=ax is axes[1])
        if len(sub) <= 12 and sub["config"].astype(bool).any():  # several configurations of one strategy: name them
            for _, point in sub.iterrows():
                if point["config"] and not _missing(point[column]):
                    ax.annotate(point["config"], (point[column], point["ACC (%)"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ACC (%)")
        ax.set_title({"time_per_exp_s": "Accuracy vs training time", "peak_memory_mb": "Accuracy vs peak memory"}[column])
    if axes[1].get_legend() is not None:
        sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1.0), title="strategy")
    fig.suptitle(f"{_scenario_title(suite, scenario)}: cost (mean over seeds; bars: 95% CI of ACC)")
    fig.tight_layout()
    _save(fig, path, figures)


def figure_sweep(grid: SweepGrid, path: Path, figures: list[Path]) -> None:
    """ACC and forgetting heatmaps over the sweep's two axes; each cell says its number of runs."""
    import numpy as np

    plt, sns = _plt()
    cells = grid.table
    ycol = grid.y or "_y"
    xs = sorted(dict(zip(cells[grid.x], cells["_x_raw"])).items(), key=lambda kv: _sort_key(kv[1]))
    ys = sorted(dict(zip(cells[ycol], cells["_y_raw"])).items(), key=lambda kv: _sort_key(kv[1]))
    x_labels, y_labels = [k for k, _ in xs], [k for k, _ in ys]
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 2.2 * len(x_labels) + 5), max(3.6, 0.8 * len(y_labels) + 2.4)))
    for ax, metric, cmap in ((axes[0], "acc", "viridis"), (axes[1], "forgetting", "rocket_r")):
        values = np.full((len(y_labels), len(x_labels)), np.nan)
        notes = np.full(values.shape, "", dtype=object)
        for _, cell in cells.iterrows():
            i, j = y_labels.index(cell[ycol]), x_labels.index(cell[grid.x])
            values[i, j] = 100 * cell[f"{metric}_mean"]
            ci = cell[f"{metric}_ci95"]
            notes[i, j] = f"{values[i, j]:.1f}\n" + (f"±{100 * ci:.1f} " if not _missing(ci) else "") + f"n={cell['n']}"
        sns.heatmap(values, annot=notes, fmt="", cmap=cmap, ax=ax, xticklabels=x_labels, yticklabels=y_labels,
                    cbar_kws={"label": f"{LABELS[metric]} (%)"}, annot_kws={"fontsize": 8})
        ax.set_xlabel(grid.x)
        ax.set_ylabel(grid.y or "")
        ax.set_title(f"{LABELS[metric]} (%), mean over seeds")
    fixed = ", ".join(f"{k}={v}" for k, v in grid.fixed.items() if v != MISSING)
    fig.suptitle(f"{grid.strategy} sweep on {_scenario_title(grid.suite, grid.scenario)}: {grid.x}"
                 + (f" x {grid.y}" if grid.y else "") + (f"\n({fixed})" if fixed else ""), fontsize=11)
    fig.tight_layout()
    _save(fig, path, figures)


# --------------------------------------------------------------------------------------------------
# report.md


def _main_rows(summary: Any, suite: str, scenario: str) -> tuple[list[str], list[list[Any]]]:
    headers = ["strategy", "config", "backbone", "epochs", "n", *(f"{LABELS[m]} %" for m in METRICS), "time/exp s", "peak MB"]
    rows = []
    for _, row in summary[(summary["suite"] == suite) & (summary["scenario"] == scenario)].iterrows():
        n = str(row["n"]) + (f" (+{row['excluded_status']}, excluded)" if row["excluded"] else "")
        rows.append([row["strategy"], row["config"] or MISSING, row["backbone"], row["epochs"], n,
                     *(mean_ci(row[f"{m}_mean"], row[f"{m}_ci95"]) for m in METRICS),
                     MISSING if _missing(row["time_per_exp_s"]) else f"{row['time_per_exp_s']:.2f}",
                     MISSING if _missing(row["peak_memory_mb"]) else f"{row['peak_memory_mb']:.0f}"])
    return headers, rows


def _comparison_md(comparison: Any) -> str:
    if comparison.empty:
        return ("No published row has the suite, scenario and strategy of these runs "
                "(see baselines/published.csv for what is available).")
    headers = ["suite", "scenario", "strategy (config)", "published method", "metric", "ours: mean ± CI (n)",
               "published ± spread", "difference (pp)", "protocol matches?", "why", "source"]
    rows = []
    for _, r in comparison.iterrows():
        spread = f" ± {pct(r['published_std'], 2)} {r['spread']}".rstrip() if not _missing(r["published_std"]) else ""
        diff = MISSING if _missing(r["difference"]) else f"{100 * r['difference']:+.1f}"
        rows.append([r["suite"], r["scenario"], r["strategy"] + (f" ({r['config']})" if r["config"] else ""), r["method"],
                     LABELS.get(r["metric"], r["metric"]), f"{mean_ci(r['ours_mean'], r['ours_ci95'])} ({r['n']})",
                     f"{pct(r['published'], 2)}{spread}", diff if r["comparable"] else f"({diff}, not comparable)",
                     "yes" if r["comparable"] else "no", r["reason"], r["source"]])
    return _md_table(headers, rows)


def _render_markdown(ctx: dict[str, Any]) -> str:
    from nlbench.core.metrics import DEFINITIONS

    runs, summary, out = ctx["runs"], ctx["summary"], ctx["out"]
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    completed = runs[runs["status"] == "completed"]
    lines = [f"# nlbench report: {ctx['results_dir'].name}", ""]
    lines.append(f"Built {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from `{ctx['results_dir']}`. "
                 "Accuracies are in percent; BWT, forgetting, FWT and differences in percentage points; "
                 "every number has 1 decimal.")
    lines += ["", "## What was run", ""]
    lines.append(f"- Finished runs: {len(runs)}; completed: {len(completed)}; diverged or failed: {len(runs) - len(completed)} "
                 f"(listed below, not aggregated); corrupt or duplicate runs skipped: {len(ctx['skipped'])}; "
                 f"unfinished runs (no `done` marker) ignored: {len(ctx['unfinished'])}.")
    for (suite, scenario), block in runs.groupby(["suite", "scenario"], sort=True):
        seeds = sorted(set(block["seed"]))
        lines.append(f"- **{suite}**, {scenario}-incremental: strategies {', '.join(sorted(set(block['strategy'])))}; "
                     f"seeds {', '.join(map(str, seeds))}; backbone(s) {', '.join(sorted(set(map(str, block['backbone']))))}; "
                     f"epochs {', '.join(sorted(set(map(str, block['epochs']))))}; batch size(s) "
                     f"{', '.join(sorted(set(map(str, block['batch_size']))))}; device(s) {', '.join(sorted(set(map(str, block['device'])) - {''})) or '?'}.")
    lines += ["", "## Metric definitions", ""]
    lines += [f"- **{LABELS[k]}** (`{k}`): {DEFINITIONS[k]}." for k in METRICS]
    lines.append(f"- Over seeds: mean, sample standard deviation (ddof=1), n, and the {int(100 * CONFIDENCE)}% confidence "
                 "interval of the mean, `mean ± t(0.975, n-1) * std / sqrt(n)` (Student t). Tables show `mean ± CI`; "
                 "n=1 has no interval (`n/a`). The std is in tables/summary.csv.")
    lines += ["", "## Main results", ""]
    if summary.empty:
        lines += ["No completed run: nothing to aggregate.", ""]
    for (suite, scenario), _ in summary.groupby(["suite", "scenario"], sort=True) if not summary.empty else []:
        lines += [f"### {_scenario_title(suite, scenario)}", ""]
        headers, rows = _main_rows(summary, suite, scenario)
        lines += [_md_table(headers, rows), ""]
        lines.append("Mean ± 95% CI over seeds. ACC: GEM's final average accuracy; forgetting: Chaudhry et al.'s "
                     "(best earlier minus final accuracy, mean over the first T-1 experiences); BWT: GEM's, divided by T-1; "
                     "FWT: against the pre-training row. n: completed runs; excluded runs are in the failed table. "
                     "config: the settings that differ between this strategy's configurations (all of them in tables/summary.csv).")
        lines.append("")
    lines += ["## Published comparison", ""]
    lines.append("Our mean and 95% CI beside the published value (± its published spread: sd = standard deviation, "
                 "sem = standard error). A pair is comparable only when the run was made under the nlbench preset "
                 "(`nlbench run --protocol NAME`) that reproduces the source's protocol, and backbone, epochs, buffer size, "
                 "number of experiences, batch size and the preset's hyperparameters all match; otherwise the difference is "
                 "shown in parentheses with the reason. Published percentages were converted to fractions before subtracting. "
                 "Metrics: ACC is GEM's final average accuracy (the sources' final_avg_acc); forgetting is assumed to be "
                 "Chaudhry et al.'s; the mapping of every published row is in baselines/published.csv (mapping_note).")
    lines += ["", _comparison_md(ctx["comparison"]), ""]
    if ctx["sweeps"]:
        lines += ["## Sweeps", ""]
        for grid in ctx["sweeps"]:
            lines.append(f"- {grid.strategy} on {_scenario_title(grid.suite, grid.scenario)}, {grid.x}"
                         + (f" x {grid.y}" if grid.y else "") + f": ![sweep]({rel(grid.figure)}) (cells: `{rel(grid.csv)}`)")
        lines.append("")
    lines += ["## Figures", ""]
    for title, path in ctx["figure_index"]:
        lines.append(f"- {title}: [{rel(path)}]({rel(path)})")
        lines.append(f"  ![{title}]({rel(path)})")
    if not ctx["figure_index"]:
        lines.append("No figure: no completed run.")
    lines += ["", "## Failed and diverged runs", ""]
    failed = runs[runs["status"] != "completed"]
    if failed.empty:
        lines.append("None.")
    else:
        lines.append("These runs are not in any mean, CI or n above.")
        lines.append("")
        lines.append(_md_table(["run id", "suite", "scenario", "strategy (config)", "seed", "status", "error (first line)", "path"],
                               [[r["run_id"][:8], r["suite"], r["scenario"], r["group_label"], r["seed"], r["status"],
                                 r["error"] or MISSING, r["path"]] for _, r in failed.iterrows()]))
    lines += ["", "## Skipped run directories", ""]
    if ctx["skipped"] or ctx["unfinished"]:
        lines += [f"- {message}" for message in ctx["skipped"]]
        lines += [f"- unfinished (no `done` marker, ignored): {path}" for path in ctx["unfinished"]]
    else:
        lines.append("None.")
    lines += ["", "## Notes on reading these numbers", ""]
    lines += [f"- {note}" for note in _notes(ctx)]
    lines += ["", "## Tables", ""]
    lines += [f"- [{rel(p)}]({rel(p)})" for p in ctx["tables"]]
    return "\n".join(lines) + "\n"


def _notes(ctx: dict[str, Any]) -> list[str]:
    from nlbench.core.protocols import PROTOCOLS

    notes = [
        "Seeds change initialisation and data order only; classes enter in their natural order in every run, "
        "so the CIs do not cover class-order variation. With n=3 the t-interval is wide (t = 4.30); read overlaps with care.",
        "A run stored under two names counts once (same run id). Corrupt or truncated run files are skipped with a warning and never counted.",
        "Peak memory on CPU is the process's peak resident set size, which includes the Python/PyTorch baseline; on GPU it is "
        "the allocator's peak. Time per experience is training time only (evaluation excluded).",
        "`cumulative` (incremental training on the growing union of the data) is not JOINT training, so it is never compared "
        "with JOINT upper bounds.",
    ]
    used = {p for p in ctx["runs"]["protocol"] if not _missing(p)}
    for name in sorted(used | ({"der2020"} if not ctx["comparison"].empty else set())):
        if name in PROTOCOLS:
            protocol = PROTOCOLS[name]
            notes.append(f"Preset `{name}` ({protocol.citation}): " + " ".join(protocol.notes))
            for method in protocol.methods:
                if not method.verified and method.strategy in set(ctx["runs"]["strategy"]):
                    notes.append(f"Preset `{name}`, {method.method} ({method.strategy}): hyperparameters UNVERIFIED: {method.note}.")
    repeated = ctx["summary"][ctx["summary"]["seeds"].map(lambda s: len(s.split(",")) != len(set(s.split(","))))] if not ctx["summary"].empty else []
    for _, row in (repeated.iterrows() if len(repeated) else []):
        notes.append(f"{row['group_label']} on {row['suite']}: a seed appears twice (e.g. runs on two devices); its n counts both.")
    return notes


# --------------------------------------------------------------------------------------------------
# The report


def build_report(
    results_dir: Path,
    out: Path,
    *,
    sweep_axes: tuple[str, ...] = DEFAULT_SWEEP_AXES,
    published: Path | None = None,
) -> ReportSummary:
    """Read every run under `results_dir` and write report.md, tables/*.csv and figures/*.png to `out`.

    Raises `nlbench.errors.UserError` when the directory is missing, not a directory, or holds no
    readable finished run, and when `out` cannot be written (checked before any drawing). Corrupt or
    truncated runs, runs of another result schema, and unfinished runs (spec.json without `done`) are
    skipped with a warning naming the path (re-issued as `UserWarning`s here, listed in
    `ReportSummary.skipped` / `.unfinished` / `.warnings` and in report.md), and never counted.
    """
    from nlbench.commands.report.published import load_published
    from nlbench.core.store import check_writable

    results_dir, out = Path(results_dir), Path(out)
    runs, skipped, unfinished = load_runs(results_dir)
    check_writable(out)  # before any table or figure is drawn
    for message in skipped:
        warnings.warn(message, UserWarning, stacklevel=2)
    for path in unfinished:
        warnings.warn(unfinished_message(path), UserWarning, stacklevel=2)
    keys = _key_columns(runs)
    _add_labels(runs, keys)
    summary = aggregate(runs, keys)
    comparison = compare_published(summary, load_published(published))
    sweeps = find_sweeps(summary, tuple(sweep_axes))

    tables_dir, figures_dir = out / "tables", out / "figures"
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    tables: list[Path] = []

    def write_csv(frame: Any, name: str) -> Path:
        path = tables_dir / name
        frame.to_csv(path, index=False)
        tables.append(path)
        return path

    hp_cols = [c for c in runs.columns if c.startswith("hp.")]
    run_cols = [c for c in ("suite", "scenario", "strategy", "config", "head", "backbone", "epochs", "batch_size", "protocol", "seed",
                            "status", *METRICS, "time_per_exp_s", "wall_time_s", "peak_memory_mb", "peak_memory_kind", "device",
                            "run_id", "error", "path") if c in runs.columns]
    runs_table = runs[run_cols + hp_cols].copy()
    for column in hp_cols:
        runs_table[column] = runs[f"_k_{column}"]
    write_csv(runs_table, "runs.csv")
    if not summary.empty:
        public = [c for c in summary.columns if not c.startswith("_") and c != "group_label"]
        write_csv(summary[public], "summary.csv")
    write_csv(comparison, "published_comparison.csv")
    write_csv(runs.loc[runs["status"] != "completed", [c for c in run_cols if c not in METRICS]], "failed_runs.csv")
    import pandas as pd

    if skipped or unfinished:
        write_csv(pd.DataFrame({"problem": skipped + [f"unfinished (no done marker): {p}" for p in unfinished]}), "skipped_runs.csv")

    figures: list[Path] = []
    figure_index: list[tuple[str, Path]] = []
    if not summary.empty:
        palette = _palette(sorted(set(summary["strategy"])))
        reps = representatives(summary)
        for (suite, scenario), _ in summary.groupby(["suite", "scenario"], sort=True):
            stem = _slug(f"{suite}_{scenario}")
            path = figures_dir / f"acc_forgetting_{stem}.png"
            figure_acc_forgetting(summary, runs, suite, scenario, palette, path, figures)
            figure_index.append((f"ACC and forgetting, {_scenario_title(suite, scenario)}", path))
            for _, rep in reps[(reps["suite"] == suite) & (reps["scenario"] == scenario)].iterrows():
                if rep["_matrix"] is None:
                    continue
                path = figures_dir / f"matrix_{stem}_{_slug(rep['strategy'])}.png"
                figure_matrix(rep, path, figures)
                figure_index.append((f"Accuracy matrix, {rep['group_label']}, {_scenario_title(suite, scenario)}", path))
            path = figures_dir / f"accuracy_over_time_{stem}.png"
            figure_over_time(reps, runs, suite, scenario, path, figures)
            if path in figures:
                figure_index.append((f"Accuracy on each experience over training, {_scenario_title(suite, scenario)}", path))
            path = figures_dir / f"cost_{stem}.png"
            figure_cost(summary, suite, scenario, palette, path, figures)
            figure_index.append((f"Cost: time per experience and peak memory vs ACC, {_scenario_title(suite, scenario)}", path))
        for grid in sweeps:
            grid.csv = write_csv(grid.table[[c for c in grid.table.columns if not c.startswith("_")]], f"sweep_{grid.name}.csv")
            grid.figure = figures_dir / f"sweep_{grid.name}.png"
            figure_sweep(grid, grid.figure, figures)

    report_md = out / "report.md"
    ctx = {"results_dir": results_dir, "out": out, "runs": runs, "summary": summary, "comparison": comparison,
           "sweeps": sweeps, "skipped": skipped, "unfinished": unfinished, "figure_index": figure_index, "tables": tables}
    report_md.write_text(_render_markdown(ctx))
    n_completed = int((runs["status"] == "completed").sum())
    return ReportSummary(
        results_dir=results_dir, out=out, report_md=report_md, tables=tables, figures=figures,
        n_runs=len(runs), n_completed=n_completed, n_not_completed=len(runs) - n_completed,
        skipped=skipped, unfinished=unfinished, summary=summary, comparison=comparison, sweeps=sweeps,
        warnings=list(skipped) + [unfinished_message(path) for path in unfinished],
    )
