"""Published multi-clock studies re-examined: one paragraph per study, generated from our verdicts.

The studies are data (`nlbench/core/presets/reexamined.toml`: protocol, reported figures with their
sources, caveats, and the comparisons that decide the question). For each comparison the paragraph gives
our paired difference in the study's analogue setting (the same suite, the largest in-regime stream we
ran) and its verdict word, then says whether a gain over Adam survives the sync control (the clock's) or
the parameter-matched baseline (the network's). Nothing is written by hand.
"""

from __future__ import annotations

import math
from typing import Any


def _studies() -> dict[str, Any]:
    from nlbench.core.protocols import read_preset

    return read_preset("reexamined.toml")


def _row(table: Any, suite: str, method: str, reference: str) -> dict[str, Any] | None:
    rows = table[(table["suite"] == suite) & (table["method"] == method) & (table["reference"] == reference)
                 & (table["metric"] == "acc")]
    if rows.empty:
        return None
    rows = rows.assign(_primary=rows["family"] == "primary").sort_values(["_primary", "n"], ascending=False)
    return rows.iloc[0].to_dict()


def _said(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run here"
    interval = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]"
    return f"{row['estimate']:+.1f}{interval} points, {row['verdict']} (n={row['n']}, {row['family']})"


def reexamination_section(table: Any) -> list[str]:
    studies = _studies()
    if not studies:
        return []
    lines = ["## Published studies re-examined", ""]
    for key, study in studies.items():
        suite = study["suite"]
        found = {(m, r): _row(table, suite, m, r) for m, r, _ in study["comparisons"]}
        said = "; ".join(f"{m} vs {r} ({why}): {_said(found[(m, r)])}" for m, r, why in study["comparisons"])
        gain = found.get(("clocked-adam", "adam")) or found.get(("cms", "adam"))
        clock = [found.get(("clocked-adam", "clocked-adam-sync")), found.get(("cms", "cms-sync"))]
        network = found.get(("cms", "adam-matched"))
        if gain is None:
            verdict = "We have no run of the analogue comparison, so we can neither confirm nor contradict it."
        else:
            agrees = gain["p_holm"] < 0.05 and gain["estimate"] > 0
            verdict = ("Our analogue agrees that the clocked method beats tuned Adam." if agrees else
                       "Our analogue does not reproduce a significant gain over tuned Adam.")
            clock_gain = [c for c in clock if c is not None and c["p_holm"] < 0.05 and c["estimate"] > 0]
            if any(c is not None for c in clock):
                verdict += (" Against the sync control the clock itself adds a significant gain." if clock_gain else
                            " Against the sync control (same network, every level every step at lr/period) the clock "
                            "itself shows no significant gain, so a gain over Adam is not the clock's.")
            if network is not None:
                verdict += (" The CMS network beats a plain MLP of its size, so part of it is the architecture."
                            if network["p_holm"] < 0.05 and network["estimate"] > 0 else
                            " A plain MLP of the CMS network's size is not significantly worse, so the size explains it.")
        lines.append(f"**{study['title']}.** {study['protocol']}. Reported: {'; '.join(study['figures'])}. Caveats: "
                     f"{'; '.join(study['caveats'])}. Ours ({suite}): {said}. {verdict}")
        lines.append("")
    return lines
