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
from nlbench.commands.report.verdicts import ALPHA, EQUIVALENT

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


def answer_figure(table: Any, path: Path) -> bool:
    """Method - control (ACC, forgetting) against slowest period / experience length; False if nothing to draw."""
    rows = table[(table["kind"] == "control") & table["period_over_e"].notna()]
    if rows.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), squeeze=False)
    for ax, metric, title in zip(axes[0], ("acc", "forgetting"), ("ACC", "Forgetting")):
        sub = rows[rows["metric"] == metric]
        for (method, reference, family), block in sub.groupby(["method", "reference", "family"], sort=True):
            x, y = block["period_over_e"].to_numpy(), block["estimate"].to_numpy()
            low, high = block["ci_low"].to_numpy(), block["ci_high"].to_numpy()
            style = dict(fmt="o-", capsize=3, ms=4) if family == "primary" else dict(fmt="x", alpha=0.45, ms=5)
            ax.errorbar(x, y, yerr=[y - low, high - y], label=f"{method} - {reference}" + ("" if family == "primary"
                                                                                           else " (off-regime/secondary)"),
                        **style)
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


def answer_section(table: Any, costs: Any, out: Path, figures: list[Path]) -> list[str]:
    lines = ["## Answer", "", f"**Question.** {QUESTION}", ""]
    if table.empty:
        return lines + ["**No answer here:** no clocked method has a control run in the same setting.", ""]
    primary = table[table["family"] == "primary"]
    off = table[(table["kind"] == "control") & (table["regime"] != "")]
    if primary.empty:
        lines.append("**No answer here.** No setting has a clocked method and its controls in regime: every clock "
                     "comparison has a level that updated fewer than 5 times over the stream, where the method and its "
                     "control are equal by construction. Lengthen the streams or shorten the periods "
                     "(`--hp periods=1,e/8,e`).")
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
    figure = out / "figures" / "answer_period_axis.png"
    if answer_figure(table, figure):
        figures.append(figure)
        lines += ["", "![the clock's effect against its slowest period](figures/answer_period_axis.png)"]
    return lines + [""]
