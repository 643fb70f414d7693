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

Modules: `load` (stored runs, configuration labels), `stats` (aggregation over seeds, t intervals),
`labels` (metric names, value formatting), `comparison` and `published` (published numbers),
`sweeps` (hyperparameter grids), `figures`, `markdown` (report.md) and `build` (`build_report`).
At module level they import only the standard library and each other (the CLI imports this package
at startup); pandas, numpy, scipy, seaborn, matplotlib (Agg backend), `published` and nlbench.core
are imported inside the functions that use them. No module here imports Typer or rich.
"""

from __future__ import annotations

from nlbench.commands.report.build import ReportSummary, build_report
from nlbench.commands.report.comparison import compare_published
from nlbench.commands.report.labels import LABELS, METRICS, MISSING, SPEC_KEYS, label, mean_ci, pct
from nlbench.commands.report.load import load_runs, unfinished_message
from nlbench.commands.report.stats import CONFIDENCE, aggregate, representatives, t_critical
from nlbench.commands.report.sweeps import DEFAULT_SWEEP_AXES, SweepGrid, find_sweeps

__all__ = [
    "CONFIDENCE", "DEFAULT_SWEEP_AXES", "LABELS", "METRICS", "MISSING", "SPEC_KEYS", "ReportSummary", "SweepGrid",
    "aggregate", "build_report", "compare_published", "find_sweeps", "label", "load_runs", "mean_ci", "pct",
    "representatives", "t_critical", "unfinished_message",
]
