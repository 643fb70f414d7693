"""`nlbench report`: options, the terminal summary and warnings. The work is `nlbench.commands.report`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from nlbench.cli.common import user_errors
from nlbench.commands.report import DEFAULT_SWEEP_AXES, MISSING, ReportSummary, build_report, mean_ci, unfinished_message
from nlbench.commands.report.labels import seeds_phrase


def print_summary(report: ReportSummary) -> None:
    """The main table (mean ± 95% CI, percent) in the terminal, then where the report is."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    summary = report.summary
    if summary.empty:
        console.print("No completed run to aggregate.")
    else:
        table = Table(title=f"{report.results_dir}: {seeds_phrase(summary)} (%)", title_justify="left")
        for column in ("suite", "scenario", "strategy", "config", "n", "ACC", "Forgetting", "BWT"):
            table.add_column(column, justify="right" if column in ("n", "ACC", "Forgetting", "BWT") else "left")
        for _, row in summary.iterrows():
            n = str(row["n"]) + (f" (+{row['excluded']} excl.)" if row["excluded"] else "")
            table.add_row(row["suite"], row["scenario"], row["strategy"], row["config"] or MISSING, n,
                          mean_ci(row["acc_mean"], row["acc_ci95"]), mean_ci(row["forgetting_mean"], row["forgetting_ci95"]),
                          mean_ci(row["bwt_mean"], row["bwt_ci95"]))
        console.print(table)
        from nlbench.core.metrics import DEFINITIONS

        for key in ("acc", "forgetting", "bwt"):
            console.print(f"  {DEFINITIONS[key]}", highlight=False)
    comparable = int(report.comparison["comparable"].sum()) if not report.comparison.empty else 0
    console.print(f"  Published rows paired: {len(report.comparison)} ({comparable} with a matching protocol).", highlight=False)
    if report.unfinished:
        console.print(f"  {len(report.unfinished)} unfinished run(s) without a 'done' marker ignored.", highlight=False)
    if report.n_not_completed:
        console.print(f"  {report.n_not_completed} diverged/failed run(s) listed in report.md, not aggregated.", highlight=False)
    console.print(f"  Report: {report.report_md} ({len(report.tables)} tables, {len(report.figures)} figures)", highlight=False)
    latex = [p for p in report.tables if p.suffix == ".tex"]
    if latex:
        console.print(f"  LaTeX tables (booktabs): {', '.join(str(p) for p in latex)}", highlight=False)


def report_command(
    results_dir: Annotated[Path, typer.Argument(
        metavar="RESULTS_DIR",
        help="Directory of stored runs, as written by `nlbench run --out`; searched recursively, so it can be the "
             "results root or one run name under it.")] = Path("results"),
    out: Annotated[Optional[Path], typer.Option(
        help="Where to write report.md, tables/ and figures/; default: reports/<name of RESULTS_DIR> "
             "(relative to the current directory; git-ignored in an nlbench checkout).")] = None,
    sweep_axes: Annotated[str, typer.Option(
        help="Two hyperparameters for the sweep heatmaps, as X,Y; when they do not vary, the hyperparameters that "
             "do vary are used.")] = ",".join(DEFAULT_SWEEP_AXES),
    published: Annotated[Optional[Path], typer.Option(
        help="Published-baselines CSV to compare with; default: the bundled baselines/published.csv.")] = None,
    latex: Annotated[bool, typer.Option(
        "--latex", help="Also write the main and published-comparison tables as LaTeX (tables/*.tex): mean ± 95% CI; "
        "a column's best is bold only when its interval overlaps no other's.")] = False,
    primary: Annotated[Optional[str], typer.Option(
        metavar="SUITE[:SCENARIO],...",
        help="The pre-declared primary settings of the Verdicts, e.g. permuted-fmnist,rotated-fmnist or "
             "split-fmnist:task: only there does a clocked method against its own controls (in regime) enter the "
             "primary Holm family; every other row is secondary. Default: every setting in regime is primary.")] = None,
) -> None:
    """Aggregate stored runs over seeds into a report (tables, figures, published numbers side by side)."""
    with user_errors():
        from nlbench.commands.report.sweeps import check_sweep_axes

        axes = check_sweep_axes(tuple(a.strip() for a in sweep_axes.split(",") if a.strip()))
        from nlbench.commands.report.verdicts import parse_primary

        declared = parse_primary(primary) if primary is not None else None
        if published is not None:  # a bad file is answered before the output directory is created
            from nlbench.commands.report.published import load_published

            load_published(published)
        target = out if out is not None else Path("reports") / (Path(results_dir).resolve().name or "results")
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            report = build_report(Path(results_dir), target, sweep_axes=axes, published=published, latex=latex,
                                  primary=declared)
        for message in report.skipped + [unfinished_message(path) for path in report.unfinished]:
            typer.echo(f"warning: {message}", err=True)
        print_summary(report)
