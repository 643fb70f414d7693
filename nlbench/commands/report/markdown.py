"""report.md: what was run, metric definitions, the main tables, the published comparison, sweeps,
figures, failed and skipped runs, and notes on reading the numbers.

Accuracies are written in percent and BWT, forgetting, FWT and differences in percentage points, each
with one decimal (`nlbench.commands.report.labels`); the CSV tables keep the stored fractions.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nlbench.commands.report.published import no_published_number_lines
from nlbench.commands.report.labels import LABELS, METRICS, MISSING, is_missing, mean_ci, pct, scenario_title, seeds_phrase
from nlbench.commands.report.stats import CONFIDENCE, t_critical


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _main_rows(summary: Any, suite: str, scenario: str) -> tuple[list[str], list[list[Any]]]:
    headers = ["configuration", "backbone", "epochs", "n", *(f"{LABELS[m]} %" for m in METRICS), "time/exp s", "peak MB"]
    rows = []
    for _, row in summary[(summary["suite"] == suite) & (summary["scenario"] == scenario)].iterrows():
        n = str(row["n"]) + (f" (+{row['excluded_status']}, excluded)" if row["excluded"] else "")
        name = row["config_label"] if not is_missing(row.get("config_label")) else row["group_label"]
        rows.append([name, row["backbone"], row["epochs"], n,
                     *(mean_ci(row[f"{m}_mean"], row[f"{m}_ci95"]) for m in METRICS),
                     MISSING if is_missing(row["time_per_exp_s"]) else f"{row['time_per_exp_s']:.2f}",
                     MISSING if is_missing(row["peak_memory_mb"]) else f"{row['peak_memory_mb']:.0f}"])
    return headers, rows


def _comparison_md(comparison: Any) -> str:
    if comparison.empty:
        return ("No published row has the suite, scenario and strategy of these runs "
                "(see baselines/published.csv for what is available).")
    headers = ["suite", "scenario", "strategy (config)", "published method", "metric", "ours: mean ± CI (n)",
               "published ± spread", "difference (pp)", "protocol matches?", "why", "source"]
    rows = []
    for _, r in comparison.iterrows():
        spread = f" ± {pct(r['published_std'], 2)} {r['spread']}".rstrip() if not is_missing(r["published_std"]) else ""
        diff = MISSING if is_missing(r["difference"]) else f"{100 * r['difference']:+.1f}"
        rows.append([r["suite"], r["scenario"], r["strategy"] + (f" ({r['config']})" if r["config"] else ""), r["method"],
                     LABELS.get(r["metric"], r["metric"]), f"{mean_ci(r['ours_mean'], r['ours_ci95'])} ({r['n']})",
                     f"{pct(r['published'], 2)}{spread}", diff if r["comparable"] else f"({diff}, not comparable)",
                     "yes" if r["comparable"] else "no", r["reason"], r["source"]])
    return _md_table(headers, rows)


def render_markdown(ctx: dict[str, Any]) -> str:
    from nlbench.core.metrics import DEFINITIONS

    runs, summary, out = ctx["runs"], ctx["summary"], ctx["out"]
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    completed = runs[runs["status"] == "completed"]
    lines = [f"# nlbench report: {ctx['results_dir'].name}", ""]
    lines.append(f"Built {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from `{ctx['results_dir']}`. "
                 "Accuracies are in percent; BWT, forgetting, FWT and differences in percentage points; "
                 "every number has 1 decimal.")
    lines += ["", *ctx.get("answer", [])]  # the Answer opens the report (nlbench.commands.report.answer)
    lines += ["", *ctx.get("verdicts", [])]
    lines += ["", *_regime_lines(runs)]
    lines += ["", *ctx.get("tuning", [])]
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
                 "a configuration with one seed has no interval and shows its single value. The std is in tables/summary.csv.")
    if not summary.empty and int(summary["n"].max()) == 1:
        lines.append("- **Every configuration here has one seed (n=1)**: each number is a single run, not a mean, and no "
                     "interval can be given. Run more seeds (e.g. `nlbench sweep --seeds 0-2`) for confidence intervals.")
    lines += ["", "## Main results", ""]
    if summary.empty:
        lines += ["No completed run: nothing to aggregate.", ""]
    for (suite, scenario), _ in summary.groupby(["suite", "scenario"], sort=True) if not summary.empty else []:
        lines += [f"### {scenario_title(suite, scenario)}", ""]
        headers, rows = _main_rows(summary, suite, scenario)
        lines += [_md_table(headers, rows), ""]
        lines.append(f"{seeds_phrase(summary)[0].upper() + seeds_phrase(summary)[1:]}. ACC: GEM's final average accuracy; forgetting: Chaudhry et al.'s "
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
    lines += [f"{line}\n" for line in no_published_number_lines(p for p in ctx["runs"]["protocol"] if not is_missing(p))]
    lines += ctx.get("reexamination", [])
    if ctx["sweeps"]:
        lines += ["## Sweeps", ""]
        from nlbench.commands.report.grid_best import best_vs_corner
        from nlbench.commands.report.mechanisms import guard_line

        for grid in ctx["sweeps"]:
            lines.append(f"- {grid.strategy} on {scenario_title(grid.suite, grid.scenario)}, {grid.x}"
                         + (f" x {grid.y}" if grid.y else "") + f": ![sweep]({rel(grid.figure)}) (cells: `{rel(grid.csv)}`)")
            for line in (best_vs_corner(grid, ctx["runs"]), guard_line(grid, ctx["runs"])):
                if line:
                    lines.append(f"  - {line}.")
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


def _regime_lines(runs: Any) -> list[str]:
    """Where the clocks ticked: every clocked configuration's levels and the slowest level's updates."""
    from nlbench.commands.report.clock_regime import REGIME_HEADERS, regime_rows
    from nlbench.core.regime import MIN_UPDATES

    rows = regime_rows(runs) if "slowest_period" in runs else []
    lines = ["## Clock regime", ""]
    if not rows:
        return lines + ["No clocked run here.", ""]
    lines.append(f"How often each clock level updated, from each run's stored clock. A level with fewer than {MIN_UPDATES} "
                 "updates over the stream cannot show a clock effect; a verdict row with such a level is off-regime and "
                 "is kept out of the primary family.")
    return lines + ["", _md_table(REGIME_HEADERS, rows), ""]


def _small_n_note(summary: Any) -> str:
    """The width of the t-interval at the smallest n that has one; nothing when no configuration has two seeds."""
    counts = sorted({int(n) for n in summary["n"]} - {1}) if not summary.empty else []
    if not counts:
        return ""
    n = counts[0]
    return f" With n={n} the t-interval is wide (t = {t_critical(n):.2f}); read overlaps with care." if n <= 5 else ""


def _notes(ctx: dict[str, Any]) -> list[str]:
    from nlbench.core.protocols import PROTOCOLS

    notes = [
        "Seeds change initialisation and data order only; classes enter in their natural order in every run, "
        "so the CIs do not cover class-order variation." + _small_n_note(ctx["summary"]),
        "A run stored under two names counts once (same run id). Corrupt or truncated run files are skipped with a warning and never counted.",
        "Peak memory on CPU is the process's peak resident set size, which includes the Python/PyTorch baseline (and, in a "
        "long-lived worker such as a Ray worker, what earlier runs left behind); on GPU it is the allocator's peak. Time per "
        "experience is training time only (evaluation excluded), taken from runs that may have shared a loaded machine. "
        "Both stay in the raw tables only: no verdict is drawn from them. A method's cost is measured in isolation by "
        "`nlbench cost` (thread CPU time, interleaved, repeated; the method's own bytes).",
        "`cumulative` (incremental training on the growing union of the data) is not JOINT training, so it is never compared "
        "with JOINT upper bounds.",
    ]
    used = {p for p in ctx["runs"]["protocol"] if not is_missing(p)}
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
