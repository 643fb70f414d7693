"""The report's figures (matplotlib, Agg backend, seaborn's whitegrid theme), one PNG each.

Per suite and scenario: ACC and forgetting per configuration with 95% t-CIs and one dot per seed, the
mean accuracy matrix of each strategy, accuracy on each experience over training, and the cost panel
(time per experience and peak memory against ACC); per sweep grid, ACC and forgetting heatmaps.
Accuracies are drawn in percent. matplotlib, seaborn, numpy and pandas are imported inside the
functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlbench.commands.report.labels import LABELS, MISSING, is_missing, scenario_title, slug, sort_key
from nlbench.commands.report.stats import representatives
from nlbench.commands.report.sweeps import SweepGrid


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def save_figure(fig: Any, path: Path, figures: list[Path]) -> None:
    """Write `fig` as a PNG, list it in `figures` and close it (every report figure goes through here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    figures.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def palette(keys: list[Any]) -> dict[Any, Any]:
    """One distinguishable colour per key (strategies, comparisons): tab10, else husl."""
    import seaborn as sns

    colors = sns.color_palette("tab10" if len(keys) <= 10 else "husl", len(keys))
    return dict(zip(keys, colors))


def draw_scenario_figures(summary: Any, runs: Any, figures_dir: Path, figures: list[Path]) -> list[tuple[str, Path]]:
    """Every per-scenario figure of a non-empty summary, appended to `figures`; returns (title, path) for report.md."""
    figure_index: list[tuple[str, Path]] = []
    colours = palette(sorted(set(summary["strategy"])))
    reps = representatives(summary)
    for (suite, scenario), _ in summary.groupby(["suite", "scenario"], sort=True):
        stem = slug(f"{suite}_{scenario}")
        path = figures_dir / f"acc_forgetting_{stem}.png"
        figure_acc_forgetting(summary, runs, suite, scenario, colours, path, figures)
        figure_index.append((f"ACC and forgetting, {scenario_title(suite, scenario)}", path))
        for _, rep in reps[(reps["suite"] == suite) & (reps["scenario"] == scenario)].iterrows():
            if rep["_matrix"] is None:
                continue
            path = figures_dir / f"matrix_{stem}_{slug(rep['strategy'])}.png"
            figure_matrix(rep, path, figures)
            figure_index.append((f"Accuracy matrix, {rep['group_label']}, {scenario_title(suite, scenario)}", path))
        path = figures_dir / f"accuracy_over_time_{stem}.png"
        figure_over_time(reps, runs, suite, scenario, path, figures)
        if path in figures:
            figure_index.append((f"Accuracy on each experience over training, {scenario_title(suite, scenario)}", path))
        path = figures_dir / f"cost_{stem}.png"
        figure_cost(summary, suite, scenario, colours, path, figures)
        figure_index.append((f"Cost: time per experience and peak memory vs ACC, {scenario_title(suite, scenario)}", path))
    return figure_index


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
        # seaborn draws the jitter from numpy's global generator: a fixed seed (the caller's state kept) makes
        # the figure the same on every build of the same runs.
        state = np.random.get_state()
        np.random.seed(0)
        try:
            sns.stripplot(data=points, x="group_label", y="value", order=order, color="black", size=3.5, jitter=0.15, ax=ax)
        finally:
            np.random.set_state(state)
        ax.set_xlabel("strategy (configuration)" if metric == "forgetting" else "")
        ax.set_ylabel(f"{LABELS[metric]} (%)")
        ax.set_title({"acc": "Final average accuracy (ACC, GEM)", "forgetting": "Forgetting (Chaudhry et al.)"}[metric])
    axes[1].tick_params(axis="x", rotation=35)
    for tick in axes[1].get_xticklabels():
        tick.set_horizontalalignment("right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[s]) for s in palette if s in set(sub["strategy"])]
    names = [s for s in palette if s in set(sub["strategy"])]
    handles += [Line2D([], [], color="black", marker="o", ls="", ms=4), Line2D([], [], color="black", marker="_", ms=12)]
    names.append("one seed")
    if np.isfinite(sub[["acc_ci95", "forgetting_ci95"]].to_numpy(dtype=float)).any():  # the legend names only what is drawn
        names.append("95% CI of the mean (Student t)")
    handles = handles[: len(names)]
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.92), title="strategy")
    fig.suptitle(f"{scenario_title(suite, scenario)}: ACC and forgetting, "
                 + ("one seed per configuration" if int(sub["n"].max()) == 1 else "mean over seeds"))
    fig.tight_layout()
    save_figure(fig, path, figures)


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
    ax.set_title(f"{row['group_label']} on {scenario_title(row['suite'], row['scenario'])}\n"
                 f"accuracy matrix R[i, j], mean of {row['n']} run(s); above the diagonal: not yet trained on",
                 fontsize=10)
    save_figure(fig, path, figures)


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
    grid.figure.suptitle(f"{scenario_title(suite, scenario)}: accuracy on each experience over training (mean over seeds)", y=1.03)
    save_figure(grid.figure, path, figures)


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
                if point["config"] and not is_missing(point[column]):
                    ax.annotate(point["config"], (point[column], point["ACC (%)"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ACC (%)")
        ax.set_title({"time_per_exp_s": "Accuracy vs training time", "peak_memory_mb": "Accuracy vs peak memory"}[column])
    if axes[1].get_legend() is not None:
        sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1.0), title="strategy")
    fig.suptitle(f"{scenario_title(suite, scenario)}: cost "
                 + ("(one seed per configuration)" if int(sub["n"].max()) == 1 else "(mean over seeds; bars: 95% CI of ACC)"))
    fig.tight_layout()
    save_figure(fig, path, figures)


def figure_sweep(grid: SweepGrid, path: Path, figures: list[Path]) -> None:
    """ACC and forgetting heatmaps over the sweep's two axes; each cell says its number of runs."""
    import numpy as np

    plt, sns = _plt()
    cells = grid.table
    ycol = grid.y or "_y"
    xs = sorted(dict(zip(cells[grid.x], cells["_x_raw"])).items(), key=lambda kv: sort_key(kv[1]))
    ys = sorted(dict(zip(cells[ycol], cells["_y_raw"])).items(), key=lambda kv: sort_key(kv[1]))
    x_labels, y_labels = [k for k, _ in xs], [k for k, _ in ys]
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 2.2 * len(x_labels) + 5), max(3.6, 0.8 * len(y_labels) + 2.4)))
    for ax, metric, cmap in ((axes[0], "acc", "viridis"), (axes[1], "forgetting", "rocket_r")):
        values = np.full((len(y_labels), len(x_labels)), np.nan)
        notes = np.full(values.shape, "", dtype=object)
        for _, cell in cells.iterrows():
            i, j = y_labels.index(cell[ycol]), x_labels.index(cell[grid.x])
            values[i, j] = 100 * cell[f"{metric}_mean"]
            ci = cell[f"{metric}_ci95"]
            notes[i, j] = f"{values[i, j]:.1f}\n" + (f"±{100 * ci:.1f} " if not is_missing(ci) else "") + f"n={cell['n']}"
        sns.heatmap(values, annot=notes, fmt="", cmap=cmap, ax=ax, xticklabels=x_labels, yticklabels=y_labels,
                    cbar_kws={"label": f"{LABELS[metric]} (%)"}, annot_kws={"fontsize": 8})
        ax.set_xlabel(grid.x)
        ax.set_ylabel(grid.y or "")
        ax.set_title(f"{LABELS[metric]} (%), mean over seeds")
    fixed = ", ".join(f"{k}={v}" for k, v in grid.fixed.items() if v != MISSING)
    fig.suptitle(f"{grid.strategy} sweep on {scenario_title(grid.suite, grid.scenario)}: {grid.x}"
                 + (f" x {grid.y}" if grid.y else "") + (f"\n({fixed})" if fixed else ""), fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, figures)
