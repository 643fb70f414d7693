"""LaTeX tables for a paper (`nlbench report --latex`), written with pandas' Styler.

- `tables/main_<suite>_<scenario>.tex`: one row per configuration (strategy, config, n) and one
  column per metric, `mean $\\pm$ 95% CI` in percent (percentage points for forgetting, BWT and FWT).
  Bold marks a best only where the intervals support it: in each metric column, the best mean
  (highest, except forgetting: lowest) is bold when its 95% CI overlaps no other configuration's
  interval. Nothing is bold in a column where the intervals overlap, where the best is a tie, or where
  a configuration has one seed (no interval); the caption says what bold means. Disjoint 95% CIs are a
  conservative reading (a difference can be significant with overlapping intervals; the Verdicts'
  paired tests are the sharper one), so a bold cell is a difference beyond the seed noise.
  A configuration with one seed shows its single value, and the caption says when every one does.
- `tables/published_comparison.tex`: the verdict table, our numbers (mean $\\pm$ 95% CI) beside the
  published ones (value $\\pm$ the published spread, its kind, sd or sem, written in the cell), the
  difference, and whether the protocols match (a difference that is not comparable is in parentheses).
Tables use booktabs rules (`\\usepackage{booktabs}`); text cells are escaped for LaTeX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlbench.commands.report.labels import LABELS, METRICS, MISSING, is_missing, pct, scenario_title, seeds_phrase, slug

LOWER_IS_BETTER = {"forgetting"}
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def escape(text: Any) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def _mean_ci(mean: Any, ci: Any) -> str:
    if is_missing(mean):
        return MISSING
    return f"{pct(mean)} $\\pm$ {pct(ci)}" if not is_missing(ci) else pct(mean)


BOLD_MEANS = "bold: the best mean whose 95% CI overlaps no other configuration's (none where the intervals overlap)"


def _best_rows(means: Any, cis: Any, lower: bool) -> set[int]:
    """The position of the best mean when its 95% CI is disjoint from every other row's; else none (module
    docstring). A tie as shown, or a row without an interval, supports no difference."""
    rows = [(i, float(m), float(c) if not is_missing(c) else None) for i, (m, c) in enumerate(zip(means, cis))
            if not is_missing(m)]
    if len(rows) < 2 or any(c is None for _, _, c in rows):
        return set()
    shown = [round(100 * m, 1) for _, m, _ in rows]
    best_shown = min(shown) if lower else max(shown)
    if shown.count(best_shown) > 1:
        return set()
    best, mean, ci = rows[shown.index(best_shown)]
    others = [(m, c) for i, m, c in rows if i != best]
    if lower:
        disjoint = all(mean + ci < m - c for m, c in others)
    else:
        disjoint = all(mean - ci > m + c for m, c in others)
    return {best} if disjoint else set()


def main_table(block: Any, caption: str, label: str) -> str:
    """One suite and scenario of the summary as a LaTeX table (see the module docstring)."""
    import pandas as pd

    metrics = [m for m in METRICS if block[f"{m}_mean"].notna().any()]
    headers = {m: f"{LABELS[m]} (%)" for m in metrics}
    frame = pd.DataFrame({
        "strategy": [escape(s) for s in block["strategy"]],
        "config": [escape(c) if c else MISSING for c in block["config"]],
        "n": [str(int(n)) for n in block["n"]],
        **{headers[m]: [_mean_ci(mu, ci) for mu, ci in zip(block[f"{m}_mean"], block[f"{m}_ci95"])] for m in metrics},
    })
    if not any(c != MISSING for c in frame["config"]):
        frame = frame.drop(columns="config")
    bold = {headers[m]: _best_rows(list(block[f"{m}_mean"]), list(block[f"{m}_ci95"]), m in LOWER_IS_BETTER) for m in metrics}

    def mark(column: Any) -> list[str]:
        best = bold.get(column.name, set())
        return ["textbf:--rwrap;" if i in best else "" for i in range(len(column))]

    styler = frame.style.apply(mark, axis=0).hide(axis="index")
    styler = styler.format_index(escape="latex", axis=1)
    fmt = "l" * (2 if "config" in frame.columns else 1) + "r" * (len(frame.columns) - (2 if "config" in frame.columns else 1))
    return styler.to_latex(column_format=fmt, hrules=True, caption=caption, label=label, position="t",
                           position_float="centering")


def comparison_table(comparison: Any) -> str:
    """The published comparison (our mean ± CI and n, published value ± spread, difference, verdict)."""
    import pandas as pd

    rows = []
    for _, r in comparison.iterrows():
        kind = "" if is_missing(r.get("spread")) else f" {escape(r['spread'])}"
        spread = f" $\\pm$ {pct(r['published_std'], 2)}{kind}" if not is_missing(r["published_std"]) else ""
        diff = MISSING if is_missing(r["difference"]) else f"{100 * r['difference']:+.1f}"
        rows.append({
            "suite": escape(r["suite"]), "strategy": escape(r["strategy"] + (f" ({r['config']})" if r["config"] else "")),
            "published method": escape(r["method"]), "metric": escape(LABELS.get(r["metric"], r["metric"])),
            "ours (%)": f"{_mean_ci(r['ours_mean'], r['ours_ci95'])} ({int(r['n'])})",
            "published (%)": f"{pct(r['published'], 2)}{spread}",
            "difference (pp)": diff if r["comparable"] else f"({diff})",
            "protocol matches": "yes" if r["comparable"] else "no",
        })
    frame = pd.DataFrame(rows)
    styler = frame.style.hide(axis="index").format_index(escape="latex", axis=1)
    caption = ("Ours (mean $\\pm$ 95\\% CI, n) beside published numbers (value $\\pm$ the published spread, of the kind "
               "named: sd = standard deviation, sem = standard error); a difference in parentheses is not comparable "
               "(the protocols differ, see report.md).")
    return styler.to_latex(column_format="llllrrrl", hrules=True, caption=caption, label="tab:nlbench-published",
                           position="t", position_float="centering")


def write_latex(summary: Any, comparison: Any, tables_dir: Path) -> list[Path]:
    """Write the main tables (one per suite and scenario) and the comparison table; return their paths."""
    written = []
    phrase = seeds_phrase(summary)
    for (suite, scenario), block in summary.groupby(["suite", "scenario"], sort=True):
        path = tables_dir / f"main_{slug(suite)}_{slug(scenario)}.tex"
        caption = escape(f"{scenario_title(suite, scenario)}: {phrase}; {BOLD_MEANS}") + "."
        path.write_text(main_table(block, caption, f"tab:nlbench-{slug(suite)}-{slug(scenario)}"))
        written.append(path)
    if not comparison.empty:
        path = tables_dir / "published_comparison.tex"
        path.write_text(comparison_table(comparison))
        written.append(path)
    return written
