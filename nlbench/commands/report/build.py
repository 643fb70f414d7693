"""`build_report`: stored runs in, report.md, tables/*.csv and figures/*.png out.

The steps, each in its own module of this package: `load` (read and check the runs, label each
configuration), `stats` (aggregate over seeds), `comparison` (pair with published rows), `sweeps`
(find hyperparameter grids), `figures` and `markdown`. The CSV tables are written here. Accuracies in
the CSV files are fractions in [0, 1], as stored; report.md and the figures show percentages.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlbench.commands.report.comparison import compare_published
from nlbench.commands.report.figures import draw_scenario_figures, figure_sweep
from nlbench.commands.report.labels import METRICS
from nlbench.commands.report.load import add_labels, key_columns, load_runs, unfinished_message
from nlbench.commands.report.markdown import render_markdown
from nlbench.commands.report.stats import aggregate
from nlbench.commands.report.sweeps import DEFAULT_SWEEP_AXES, SweepGrid, find_sweeps
from nlbench.commands.report.answer import answer_section
from nlbench.commands.report.clock_regime import add_regime
from nlbench.commands.report.config_labels import add_config_labels
from nlbench.commands.report.costs import load_cost_table
from nlbench.commands.report.reexamination import reexamination_section
from nlbench.commands.report.tuning import tuning_section
from nlbench.commands.report.verdicts import Primary, compute_verdicts, tuned_run_ids
from nlbench.commands.report.verdicts_render import verdicts_section


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


def build_report(
    results_dir: Path,
    out: Path,
    *,
    sweep_axes: tuple[str, ...] = DEFAULT_SWEEP_AXES,
    published: Path | None = None,
    latex: bool = False,
    primary: Primary | None = None,
) -> ReportSummary:
    """Read every run under `results_dir` and write report.md, tables/*.csv and figures/*.png to `out`.

    Raises `nlbench.errors.UserError` when the directory is missing, not a directory, or holds no
    readable finished run, and when `out` cannot be written (checked before any drawing). Corrupt or
    truncated runs, runs of another result schema, and unfinished runs (spec.json without `done`) are
    skipped with a warning naming the path (re-issued as `UserWarning`s here, listed in
    `ReportSummary.skipped` / `.unfinished` / `.warnings` and in report.md), and never counted.
    `primary`: the pre-declared primary settings of the Verdicts (`verdicts.parse_primary`); None: every
    setting where a clocked method and its controls are in regime.
    """
    from nlbench.commands.report.published import load_published
    from nlbench.core.store import check_writable

    results_dir, out = Path(results_dir), Path(out)
    runs, skipped, unfinished = load_runs(results_dir)  # a missing directory is answered before pandas loads
    import pandas as pd
    check_writable(out)  # before any table or figure is drawn
    for message in skipped:
        warnings.warn(message, UserWarning, stacklevel=2)
    for path in unfinished:
        warnings.warn(unfinished_message(path), UserWarning, stacklevel=2)
    keys = key_columns(runs)
    add_labels(runs, keys)
    add_regime(runs)
    add_config_labels(runs, tuned_run_ids(results_dir))
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
    run_cols = [c for c in ("suite", "scenario", "strategy", "config_label", "config", "head", "backbone", "epochs", "batch_size", "protocol", "seed",
                            "status", *METRICS, "time_per_exp_s", "wall_time_s", "peak_memory_mb", "peak_memory_kind", "device",
                            "slowest_period", "slowest_updates", "slowest_per_exp", "level_updates", "regime_note",
                            "run_id", "error", "path") if c in runs.columns]
    runs_table = runs[run_cols + hp_cols].copy()
    for column in hp_cols:
        runs_table[column] = runs[f"_k_{column}"]
    write_csv(runs_table, "runs.csv")
    if not summary.empty:
        public = [c for c in summary.columns if not c.startswith("_") and c != "group_label"]
        write_csv(summary[public], "summary.csv")
    write_csv(comparison, "published_comparison.csv")
    if latex and not summary.empty:  # paper tables: tables/main_*.tex, tables/published_comparison.tex
        from nlbench.commands.report.latex import write_latex

        tables += write_latex(summary, comparison, tables_dir)
    write_csv(runs.loc[runs["status"] != "completed", [c for c in run_cols if c not in METRICS]], "failed_runs.csv")
    if skipped or unfinished:
        write_csv(pd.DataFrame({"problem": skipped + [f"unfinished (no done marker): {p}" for p in unfinished]}), "skipped_runs.csv")

    figures: list[Path] = []
    figure_index: list[tuple[str, Path]] = []
    if not summary.empty:
        figure_index = draw_scenario_figures(summary, runs, figures_dir, figures)
        for grid in sweeps:
            grid.csv = write_csv(grid.table[[c for c in grid.table.columns if not c.startswith("_")]], f"sweep_{grid.name}.csv")
            grid.figure = figures_dir / f"sweep_{grid.name}.png"
            figure_sweep(grid, grid.figure, figures)

    report_md = out / "report.md"
    ctx = {"results_dir": results_dir, "out": out, "runs": runs, "summary": summary, "comparison": comparison,
           "sweeps": sweeps, "skipped": skipped, "unfinished": unfinished, "figure_index": figure_index, "tables": tables}
    table = compute_verdicts(runs, results_dir, primary)
    costs = load_cost_table(results_dir)
    ctx["answer"] = answer_section(table, costs, out, figures, runs, primary)  # the opening section, generated from the verdicts
    ctx["verdicts"] = verdicts_section(table, costs, out, write_csv, figures, primary)
    ctx["tuning"] = tuning_section(results_dir)
    ctx["reexamination"] = reexamination_section(table)
    from nlbench.commands.report.continual import continual_section

    report_md.write_text(render_markdown(ctx) + continual_section(runs, out, write_csv, figures))
    n_completed = int((runs["status"] == "completed").sum())
    return ReportSummary(
        results_dir=results_dir, out=out, report_md=report_md, tables=tables, figures=figures,
        n_runs=len(runs), n_completed=n_completed, n_not_completed=len(runs) - n_completed,
        skipped=skipped, unfinished=unfinished, summary=summary, comparison=comparison, sweeps=sweeps,
        warnings=list(skipped) + [unfinished_message(path) for path in unfinished],
    )
