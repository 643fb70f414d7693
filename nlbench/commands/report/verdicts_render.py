"""The Verdicts section of report.md: the primary family first, then the exploratory rows, and one forest
plot per setting (legible at page width), from `nlbench.commands.report.verdicts.compute_verdicts`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from nlbench.commands.report.costs import describe_cost, pair_cost
from nlbench.commands.report.labels import slug
from nlbench.commands.report.power import MARGIN
from nlbench.commands.report.verdicts import ALPHA, COMPARED, EQUIVALENT, NO_DIFFERENCE, Primary, describe_primary


def cell(row: Any) -> str:
    """'+1.2 [-0.5, +2.9] (Holm p=0.2)': mean difference, unadjusted 95% CI, family-adjusted p."""
    if row is None or row["n"] == 0:
        return "-"
    if math.isnan(row["ci_low"]):
        return f"{row['estimate']:+.1f}"
    p = "" if math.isnan(row["p_holm"]) else f" (Holm p={row['p_holm']:.2g})"
    return f"{row['estimate']:+.1f} [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]{p}"


def _setting_title(first: Any) -> str:
    return f"{first['suite']}, {first['scenario']}" + (f" ({first['setting']})" if first["setting"] else "")


def forest_plot(pairs: Any, path: Path, title: str) -> None:
    """ACC and forgetting differences with their unadjusted 95% intervals, one row per comparison of one setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("acc", "forgetting")
    keys = pairs.drop_duplicates(["method", "reference"])
    labels = [f"{r.method} vs {r.reference}" + (" (primary)" if r.family == "primary" else "") for r in keys.itertuples()]
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.36 * len(labels) + 1.5), sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], shown):
        for y, r in enumerate(keys.itertuples()):
            row = pairs[(pairs["method"] == r.method) & (pairs["reference"] == r.reference) & (pairs["metric"] == metric)]
            if row.empty or math.isnan(row["estimate"].iloc[0]):
                continue
            est, lo, hi, p = (float(row[c].iloc[0]) for c in ("estimate", "ci_low", "ci_high", "p_holm"))
            color = "tab:red" if not math.isnan(p) and p < ALPHA else "0.5"
            if not math.isnan(lo):
                ax.plot([lo, hi], [y, y], color=color, lw=1.6)
            ax.plot([est], [y], "o" if r.family == "primary" else "s", color=color, ms=4)
        ax.axvline(0, color="black", lw=0.8, ls="--")
        for edge in (-MARGIN, MARGIN):
            ax.axvline(edge, color="tab:blue", lw=0.6, ls=":")
        ax.set_title(f"{COMPARED[metric][0]}: method - reference (pp)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)))
    axes[0][0].set_yticklabels(labels, fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle(f"{title}: unadjusted 95% t-intervals; red: Holm p < 0.05 in its family; dotted: ±{MARGIN:g} pt", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(table: Any, costs: Any) -> list[str]:
    headers = ["setting", "method", "vs", "n", *(COMPARED[m][0] for m in COMPARED), "verdict (ACC; forgetting)",
               "regime", "cost (nlbench cost)"]
    body = []
    for _, pair in table.groupby(["suite", "scenario", "setting", "method", "reference"], sort=False):
        cells = {r["metric"]: r for r in pair.to_dict("records")}
        first = pair.iloc[0]
        cost = pair_cost(costs, first["suite"], first["suite_options"], first["scenario"], first["method"], first["reference"])
        body.append([_setting_title(first), first["method_config"], f"{first['reference_config']} ({first['kind']})",
                     int(cells["acc"]["n"]), *(cell(cells.get(m)) for m in COMPARED),
                     f"{cells['acc']['verdict']}; {cells['forgetting']['verdict']}", first["regime"] or "in regime",
                     describe_cost(cost)])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]


def verdicts_section(table: Any, costs: Any, out: Path, write_csv: Callable[[Any, str], Path], figures: list[Path],
                     primary: Primary | None = None) -> list[str]:
    """tables/verdicts.csv, figures/verdicts_<setting>.png and the report.md lines."""
    lines = ["## Verdicts", ""]
    if table.empty:
        return lines + ["No Nested Learning method has a control or Adam run in the same setting: nothing to pair.", ""]
    write_csv(table, "verdicts.csv")
    lines.append(
        "Each Nested Learning method against its controls (the same network without the clock), the two-timescale "
        "references (Lookahead, AdEMAMix) and Adam, paired by seed in the same setting. Cells: mean paired difference "
        "(method - reference, percentage points) [unadjusted 95% Student-t interval] (Holm-adjusted p of the paired "
        "t-test within its family). **Primary family (pre-declared):** each clocked method against its own sync and "
        "frozen controls, in the primary settings ("
        f"{describe_primary(primary)}), where every clock level updated at least 5 times over the stream; one Holm "
        "family per metric. **Secondary (exploratory):** every other row: other settings, other references, and "
        "off-regime clock rows; their own Holm family. "
        f"The verdict word comes from the family-adjusted tests alone: Holm p < {ALPHA} gives the direction; else a "
        f"paired TOST against ±{MARGIN:g} point (Holm-adjusted) gives \"{EQUIVALENT}\"; else \"{NO_DIFFERENCE}\" with "
        "the minimum detectable effect (MDE) at 80% power at the family's Bonferroni level, from the row's paired sd and "
        "n. Cost: the isolated measurement of `nlbench cost` (median step time ratio, difference of the methods' own "
        "state bytes), never the runs' wall times.")
    lines.append("")
    for family, title in (("primary", "Primary comparisons"), ("secondary", "Secondary comparisons (exploratory)")):
        block = table[table["family"] == family]
        lines += [f"### {title}", ""]
        lines += (_table(block, costs) if not block.empty else ["None."]) + [""]
    lines += ["### Forest plots, one per setting", ""]
    for _, pairs in table.groupby(["suite", "scenario", "setting"], sort=True):
        first = pairs.iloc[0]
        title = _setting_title(first)
        figure = out / "figures" / f"verdicts_{slug(title)}.png"
        forest_plot(pairs, figure, title)
        figures.append(figure)
        lines += [f"- {title}: ![verdicts {title}](figures/{figure.name})"]
    return lines + ["", "All rows, with raw and adjusted p-values, MDE and TOST: tables/verdicts.csv.", ""]
