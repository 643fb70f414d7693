"""The Answer: the section that opens report.md, generated from the Verdicts (never written by hand).

It states the question, then for each setting where a clocked method and its controls ran in regime
(the primary family of `nlbench.commands.report.verdicts`), what the clock did there: ACC and
forgetting, method minus control, with the unadjusted 95% interval and the family's Holm p or MDE, and
the cost from `nlbench cost`. It counts where the clock helped, hurt, was equivalent or could not be
told apart, and says plainly when no setting can answer (every clocked row off-regime). One compact
figure goes with it: method minus control against the slowest period over the experience length.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nlbench.commands.report.costs import describe_cost, pair_cost
from nlbench.commands.report.power import MARGIN
from nlbench.commands.report.verdicts import ALPHA, EQUIVALENT, Primary, describe_primary, declared_primary
from nlbench.core.regime import MIN_UPDATES

QUESTION = ("Does multi-timescale learning forget less, or learn more, than the same network without the clock, "
            "and at what cost?")


def _phrase(row: dict[str, Any], what: str) -> str:
    if math.isnan(row["ci_low"]):
        return f"{what} {row['estimate']:+.1f} (n={row['n']}, no interval)"
    tail = f"Holm p = {row['p_holm']:.2g}" if not math.isnan(row["p_holm"]) else "untested"
    return f"{what} {row['estimate']:+.1f} [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}] pt: {row['verdict']} ({tail})"


def _outcome(acc: dict[str, Any], forgetting: dict[str, Any]) -> str:
    word = _direction(acc, forgetting)
    significant = [r for r in (acc, forgetting) if r["p_holm"] < ALPHA]
    if word in ("helps", "hurts", "mixed") and all(abs(r["estimate"]) < MARGIN for r in significant):
        return f"{word}, by less than {MARGIN:g} pt"
    return word


def _direction(acc: dict[str, Any], forgetting: dict[str, Any]) -> str:
    helped = (acc["p_holm"] < ALPHA and acc["estimate"] > 0) or (forgetting["p_holm"] < ALPHA and forgetting["estimate"] < 0)
    hurt = (acc["p_holm"] < ALPHA and acc["estimate"] < 0) or (forgetting["p_holm"] < ALPHA and forgetting["estimate"] > 0)
    if helped and hurt:
        return "mixed"
    if helped:
        return "helps"
    if hurt:
        return "hurts"
    if acc["verdict"] == EQUIVALENT and forgetting["verdict"] == EQUIVALENT:
        return "equivalent"
    return "cannot tell"


def _period_invariant(control: str) -> bool:
    """A frozen control (`cms-frozen`, `hope-frozen`): its slow levels never step, so its run depends on the
    fastest period only; the period axis pairs it with its runs at any periods that share that one."""
    return control.endswith("-frozen")




def period_rows(runs: Any) -> Any:
    """Method - own control at every clock-period setting both ran (the period axis), paired by seed: one row
    per (setting, method, control, periods, metric). The verdicts take one configuration per strategy; here
    each resolved `periods` value is its own point, each side at its own learning rate (one configuration
    per strategy and periods: the one with the most runs). A frozen control is paired at its most-run
    configuration with the same fastest period (`_period_invariant`). Unadjusted 95% intervals: a plot, not a
    verdict."""
    import pandas as pd

    from nlbench.commands.report.verdicts import (_families, _setting_columns, _setting_text, pair_by_seed, paired_stats,
                                                  references)

    if "slowest_period" not in runs or "_k_hp.periods" not in runs:
        return pd.DataFrame()
    clocked = runs[(runs["status"] == "completed") & runs["slowest_period"].notna()]
    families, rows = _families(), []

    def one_config(block: Any) -> Any:
        return block[block["config"] == block["config"].value_counts().index[0]] if len(block) else block

    for _, block in clocked.groupby(_setting_columns(clocked), sort=True):
        first = block.iloc[0]
        for method in sorted(block["strategy"].unique()):
            for reference, kind in references(method, families):
                if kind != "control":
                    continue
                ours_all, theirs_all = block[block["strategy"] == method], block[block["strategy"] == reference]
                for periods, ours in ours_all.groupby("_k_hp.periods"):
                    same = theirs_all["_k_hp.periods"] == periods
                    if _period_invariant(reference):  # the same run at every periods with this fastest one
                        same = theirs_all["hp.periods"].map(min) == min(ours["hp.periods"].iloc[0])
                    ours, theirs = one_config(ours), one_config(theirs_all[same])
                    merged = pair_by_seed(ours, theirs)
                    if len(merged) < 2:
                        continue
                    x = float((ours["slowest_period"] / ours["experience_length"]).median())
                    for metric in ("acc", "forgetting"):
                        rows.append({"suite": first["suite"], "scenario": first["scenario"], "setting": _setting_text(first),
                                     "method": method, "reference": reference, "periods": periods, "period_over_e": x,
                                     "slowest_updates": float(ours["slowest_updates"].median()), "metric": metric,
                                     **paired_stats(merged[metric], merged[f"{metric}_ref"])})
    return pd.DataFrame(rows)


def swept(axis: Any) -> Any:
    """The rows of `period_rows` whose (setting, method, control) ran at two or more periods: an axis. A single
    point is one of the verdict rows, already stated above it."""
    if axis is None or not len(axis):
        return axis
    keys = ["suite", "scenario", "setting", "method", "reference"]
    return axis[axis.groupby(keys, sort=False)["periods"].transform("nunique") >= 2]


def answer_figure(table: Any, path: Path, axis: Any = None) -> bool:
    """Method - control (ACC, forgetting) against slowest period / experience length; False if nothing to draw.
    The period axis (`period_rows`) when it has points, else the verdicts' control rows."""
    if axis is not None and len(axis):  # a point whose slowest level updated under MIN_UPDATES times is off-regime
        rows = axis.assign(family=["primary" if u >= MIN_UPDATES else "secondary" for u in axis["slowest_updates"]])
    else:
        rows = table[(table["kind"] == "control") & table["period_over_e"].notna()]
    if rows.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlbench.commands.report.figures import palette

    rows = rows.assign(suite=rows["suite"] if "suite" in rows else "")
    suites = sorted(rows["suite"].unique())  # one line per setting: points of two streams never join
    # One colour and marker per comparison, so its off-regime points (crosses) keep the colour of its line and
    # do not take the next colour of the cycle (which made neighbouring comparisons look alike).
    colours = palette(sorted(set(zip(rows["suite"], rows["method"], rows["reference"]))))
    look = {pair: (colour, "osD^vP<>"[i % 8]) for i, (pair, colour) in enumerate(colours.items())}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), squeeze=False)
    for ax, metric, title in zip(axes[0], ("acc", "forgetting"), ("ACC", "Forgetting")):
        sub = rows[rows["metric"] == metric]
        off_labelled = False
        for (suite, method, reference, family), block in sub.groupby(["suite", "method", "reference", "family"],
                                                                      sort=True):
            block = block.sort_values("period_over_e")
            x, y = block["period_over_e"].to_numpy(), block["estimate"].to_numpy()
            low, high = block["ci_low"].to_numpy(), block["ci_high"].to_numpy()
            colour, marker = look[(suite, method, reference)]
            if family == "primary":
                line = ("-", "--", ":", "-.")[suites.index(suite) % 4]
                label = f"{method} - {reference}" + (f" [{suite}]" if len(suites) > 1 else "")
                ax.errorbar(x, y, yerr=[y - low, high - y], fmt=marker + line, color=colour, capsize=3, ms=4,
                            label=label)
            else:
                label = None if off_labelled else f"x: off-regime (slowest level < {MIN_UPDATES} updates)"
                off_labelled = True
                ax.errorbar(x, y, yerr=[y - low, high - y], fmt="x", color=colour, alpha=0.5, ms=6, capsize=2,
                            label=label)
        ax.axhline(0, color="black", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("slowest period / experience length")
        ax.set_ylabel(f"{title}: method - control (pp)")
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=6, loc="best")
    fig.suptitle("The clock's effect against its slowest period (unadjusted 95% intervals)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def axis_lines(axis: Any) -> list[str]:
    """The period axis as a compact table (ACC and forgetting, method - control, per resolved periods)."""
    if axis is None or not len(axis):
        return []
    lines = ["", "The clock-period axis (method - its control at the same resolved periods, each at the learning rate "
             "tuned at the default clock; unadjusted 95% intervals, n paired seeds):", "",
             "| setting | method - control | periods | slowest / e | slowest level updates | n | ACC | forgetting |",
             "|---|---|---|---|---|---|---|---|"]
    for (suite, scenario, setting, method, reference, periods), block in axis.groupby(
            ["suite", "scenario", "setting", "method", "reference", "periods"], sort=False):
        cells = {r["metric"]: r for r in block.to_dict("records")}
        acc, forgetting = cells["acc"], cells["forgetting"]
        lines.append(f"| {suite}, {scenario}" + (f" ({setting})" if setting else "") + f" | {method} - {reference} | "
                     f"{periods} | {acc['period_over_e']:.2g} | {acc['slowest_updates']:.0f} | {acc['n']} | "
                     f"{acc['estimate']:+.1f} [{acc['ci_low']:+.1f}, {acc['ci_high']:+.1f}] | "
                     f"{forgetting['estimate']:+.1f} [{forgetting['ci_low']:+.1f}, {forgetting['ci_high']:+.1f}] |")
    return lines


def answer_section(table: Any, costs: Any, out: Path, figures: list[Path], runs: Any = None,
                   declared: Primary | None = None) -> list[str]:
    lines = ["## Answer", "", f"**Question.** {QUESTION}", "", f"**Primary settings:** {describe_primary(declared)}.", ""]
    if table.empty:
        return lines + ["**No answer here:** no clocked method has a control run in the same setting.", ""]
    primary = table[table["family"] == "primary"]
    off = table[(table["kind"] == "control") & (table["regime"] != "")]
    for suite, scenario in declared or ():
        if not any(declared_primary(((suite, scenario),), s, c) for s, c in zip(primary["suite"], primary["scenario"])):
            lines.append(f"Declared primary setting {suite}" + (f" ({scenario})" if scenario else "") + " has no clocked "
                         "method with its controls in regime: it answers nothing here.")
    if primary.empty:
        lines.append(f"**No answer here.** No {'declared primary ' if declared else ''}setting has a clocked method and "
                     "its controls in regime: every such clock comparison has a level that updated fewer than 5 times "
                     "over the stream, where the method and its control are equal by construction. Lengthen the streams "
                     "or shorten the periods (`--hp periods=1,e/8,e`).")
    outcomes: dict[str, int] = {}
    for (suite, scenario, setting), block in primary.groupby(["suite", "scenario", "setting"], sort=True):
        first = block.iloc[0]
        where = f"{suite}, {scenario}" + (f" ({setting})" if setting else "")
        clock = (f"slowest level C={first['slowest_period']:.0f} = {first['period_over_e']:.2g} experience lengths, "
                 f"{first['slowest_updates']:.0f} updates over the stream") if not math.isnan(first["slowest_period"]) else ""
        lines.append(f"**{where}** ({clock}):")
        for (method, reference), pair in block.groupby(["method", "reference"], sort=True):
            cells = {r["metric"]: r for r in pair.to_dict("records")}
            acc, forgetting = cells["acc"], cells["forgetting"]
            outcome = _outcome(acc, forgetting)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            cost = pair_cost(costs, suite, first["suite_options"], scenario, method, reference)
            lines.append(f"- {method} vs {reference} (n={acc['n']}): **{outcome}**. {_phrase(acc, 'ACC')}; "
                         f"{_phrase(forgetting, 'forgetting')}; {describe_cost(cost)}.")
        lines.append("")
    if outcomes:
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
        lines.append(f"In all, over {sum(outcomes.values())} primary comparisons: {summary} (\"helps\": the clocked "
                     "method has higher ACC or forgets less at Holm p < 0.05; \"cannot tell\": no difference detected and "
                     "equivalence not shown; the MDE says how large a difference could have been missed).")
    if not off.empty:
        n_off = off.drop_duplicates(["suite", "scenario", "setting", "method", "reference"])
        lines.append(f"{len(n_off)} clock comparison(s) are off-regime and answer nothing (e.g. "
                     f"{n_off.iloc[0]['suite']}, {n_off.iloc[0]['method']} vs {n_off.iloc[0]['reference']}: "
                     f"{n_off.iloc[0]['regime']}); they are in the secondary table.")
    axis = swept(period_rows(runs)) if runs is not None else None
    if axis is not None and len(axis):
        axis = axis.sort_values(["suite", "scenario", "method", "reference", "period_over_e"], kind="stable")
    figure = out / "figures" / "answer_period_axis.png"
    if answer_figure(table, figure, axis):
        figures.append(figure)
        lines += ["", "![the clock's effect against its slowest period](figures/answer_period_axis.png)"]
    return lines + axis_lines(axis) + [""]
