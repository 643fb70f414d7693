"""What "±" and bold mean where results are printed (issue 26, item 8).

"±" is the 95% CI of the mean (Student t) everywhere nlbench prints our numbers: the sweep's summary
table shows the same interval `nlbench report` shows for the same runs (it used to show the sample std
there), and a published spread is printed with its kind (sd, sem). In `--latex` tables bold marks a
best only where its 95% CI overlaps no other configuration's, and the caption says so.
"""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from scipy import stats

from nlbench.commands.report.latex import BOLD_MEANS, _best_rows, comparison_table, write_latex
from nlbench.commands.report.labels import METRICS, mean_ci


def _block(rows: list[dict]) -> pd.DataFrame:
    """A summary block (one suite and scenario) in `aggregate`'s columns; metrics not given are absent."""
    out = []
    for row in rows:
        full = {"suite": "split-digits", "scenario": "class", "strategy": row["strategy"], "config": "", "n": row.get("n", 3)}
        for metric in METRICS:
            mean, ci = row.get(metric, (math.nan, math.nan))
            full[f"{metric}_mean"], full[f"{metric}_ci95"] = mean, ci
        out.append(full)
    return pd.DataFrame(out)


@pytest.mark.parametrize("values, lower, bold", [
    ([(0.80, 0.01), (0.70, 0.02), (0.60, 0.05)], False, {0}),  # clearly apart: the best is bold
    ([(0.10, 0.01), (0.30, 0.02)], True, {0}),  # forgetting: lower is better
    ([(-0.036, 1.213), (-0.20, 0.05)], False, set()),  # the issue's -3.6 ± 121.3 at n = 2: inside the noise
    ([(0.80, 0.06), (0.70, 0.05)], False, set()),  # means apart, intervals overlap (0.74 < 0.75)
    ([(0.8004, 0.001), (0.8001, 0.001)], False, set()),  # a tie as shown (80.0 twice)
    ([(0.80, 0.01), (0.50, math.nan)], False, set()),  # a configuration with one seed: no interval to compare
    ([(0.80, 0.01)], False, set()),  # nothing to compare with
])
def test_bold_marks_only_a_best_whose_interval_overlaps_no_other(values, lower, bold):
    means, cis = zip(*values)
    assert _best_rows(list(means), list(cis), lower) == bold


def test_latex_tables_bold_only_supported_differences_and_say_what_bold_means(tmp_path):
    block = _block([
        {"strategy": "replay", "acc": (0.80, 0.01), "forgetting": (0.10, 0.05), "bwt": (-0.036, 1.213)},
        {"strategy": "adam", "acc": (0.50, 0.02), "forgetting": (0.12, 0.05), "bwt": (-0.20, 0.05)},
    ])
    (path,) = write_latex(block, pd.DataFrame(), tmp_path)
    text = path.read_text()
    body = text.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    header = text.split("\\toprule", 1)[1].split("\\midrule", 1)[0].strip().rstrip("\\ ").split(" & ")
    rows = [[c.strip() for c in line.rstrip("\\ ").split(" & ")] for line in body.strip().splitlines()]
    bolded = {(r[0], header[j]) for r in rows for j, c in enumerate(r) if c.startswith("\\textbf")}
    assert bolded == {("replay", "ACC (\\%)")}  # forgetting and BWT overlap: no bold there
    assert "mean $\\pm$ 95\\% CI over seeds" in text
    assert BOLD_MEANS.replace("%", "\\%") in " ".join(text.split())


def test_the_published_spread_is_printed_with_its_kind_beside_our_interval():
    comparison = pd.DataFrame([{
        "suite": "split-cifar10", "scenario": "class", "strategy": "der", "config": "", "method": "DER", "metric": "acc",
        "n": 3, "ours_mean": 0.70, "ours_ci95": 0.02, "published": 0.7074, "published_std": 0.0188, "spread": "sd",
        "difference": -0.0074, "comparable": True, "reason": "", "source": "Buzzega et al.", "source_detail": "",
    }])
    text = comparison_table(comparison)
    assert "70.0 $\\pm$ 2.0 (3)" in text and "70.74 $\\pm$ 1.88 sd" in text
    assert "95\\% CI" in text and "sd = standard deviation" in " ".join(text.split())


def test_the_sweep_summary_shows_the_reports_95_percent_interval_not_the_sample_std():
    from rich.console import Console

    from nlbench.cli.sweep_display import print_summary
    from nlbench.commands.sweep import PlannedRun
    from nlbench.core.spec import resolve_spec

    accs = [0.50, 0.56, 0.53]
    planned = [PlannedRun(resolve_spec("split-digits", "adam", device="cpu", seed=s), ()) for s in range(3)]
    results = {run.spec.run_id: {"status": "completed", "metrics": {"acc": a, "forgetting": 0.1}}
               for run, a in zip(planned, accs)}
    console = Console(record=True, width=240)
    print_summary(console, "sweep", planned, results)
    output = console.export_text()
    sd = statistics.stdev(accs)
    ci = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)  # 7.5 points; the sample std is 3.0
    assert mean_ci(statistics.fmean(accs), ci) == "53.0 ± 7.5"  # what report.md shows for these runs
    assert "53.0 ± 7.5" in output and f"± {100 * sd:.1f}" not in output
    assert "ACC % ± 95% CI" in output and "95% CI of the mean" in " ".join(output.split())
