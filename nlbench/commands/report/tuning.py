"""The tuning protocol, shown: budget, sampler, search spaces, validation fraction, tuning seed, chosen values.

Read from every `selection.json` under the results (written by `nlbench tune`; format:
`nlbench.commands.tune.provenance`). A chosen value within `EDGE` of its range's edge (on the log scale
for a log range) is flagged: there the range, not the method, decided the value, and a wider range
might have chosen differently. A damaged file is skipped whole (`nlbench.core.selection`), with a warning
naming it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterator

EDGE = 0.05  # share of the (log) range within which a chosen value counts as "at the edge"
_RANGE = re.compile(r"^\[(?P<low>[^,\]]+),\s*(?P<high>[^\]]+)\](?P<log> log)?$")


def selection_entries(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, entry) for every entry of every selection.json under `results_dir` that passes its declared
    schema (`nlbench.core.selection`: a damaged file is used not at all, and never opened unless it is a
    regular file); `load_runs` reports the damaged files, one warning each."""
    from nlbench.core.selection import SELECTION_FILE, read_selection_file

    for path in sorted(Path(results_dir).rglob(SELECTION_FILE)):
        for entry in read_selection_file(path)[0]:
            yield path, entry


def edge_position(value: Any, described: str) -> float | None:
    """Where `value` lies in a range written `[low, high]` or `[low, high] log`: 0 at low, 1 at high."""
    match = _RANGE.match(str(described).strip())
    if match is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    low, high = float(match["low"]), float(match["high"])
    if match["log"]:
        if low <= 0 or value <= 0:
            return None
        low, high, value = math.log(low), math.log(high), math.log(value)
    return (value - low) / (high - low) if high > low else None


def at_edge(value: Any, described: str) -> str:
    """"low edge" / "high edge" when `value` is within EDGE of that end of its range, else ""."""
    position = edge_position(value, described)
    if position is None:
        return ""
    return "low edge" if position <= EDGE else "high edge" if position >= 1 - EDGE else ""


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def tuning_rows(results_dir: Path) -> tuple[list[str], list[list[Any]], int]:
    """(protocol lines, one row per tuned strategy and setting, number of chosen values at an edge)."""
    entries = list(selection_entries(results_dir))
    protocols = sorted({(e.get("budget"), e.get("sampler"), e.get("val_fraction"), e.get("tune_seed"), e.get("metric"))
                        for _, e in entries}, key=str)
    lines = [f"- budget {b} trials per strategy, sampler {s}, validation: {v} of each experience's training data "
             f"held out, tuning seed {t}, selection metric {m}" for b, s, v, t, m in protocols]
    rows, flagged = [], 0
    for _, entry in entries:
        setting = entry.get("setting") or {}
        space = entry.get("space") or {}
        chosen = entry.get("chosen") or {}
        cells = []
        for key, described in sorted(space.items()):
            value = chosen.get(key)
            edge = at_edge(value, described)
            flagged += bool(edge)
            cells.append(f"{key} {described}: {_value(value)}" + (f" **at {edge}**" if edge else ""))
        rows.append([setting.get("suite", "?"), setting.get("scenario", "?"), entry["strategy"],
                     "; ".join(cells) or "(nothing tuned: defaults)", len(entry.get("trials") or []),
                     len(entry.get("test_run_ids") or [])])
    return lines, rows, flagged


def tuning_section(results_dir: Path) -> list[str]:
    lines, rows, flagged = tuning_rows(results_dir)
    out = ["## Tuning", ""]
    if not rows:
        return out + ["No `selection.json` under the results: no configuration here was chosen by `nlbench tune`; "
                      "every run is at the configuration it was given (labelled \"defaults\" or by its changed keys).", ""]
    out.append("Every tuned strategy got the same budget of Optuna trials on validation data held out of each training "
               "experience (the test set is never read during selection); the chosen configuration then ran on the test "
               "seeds. Runs not chosen by a tune (measurement runs at the defaults: continual evaluation, probes, "
               "re-exposure) are labelled \"defaults\" wherever they appear.")
    out += ["", *lines, ""]
    if flagged:
        out.append(f"**{flagged} chosen value(s) lie within {100 * EDGE:.0f}% of an edge of their range (log scale for log "
                   "ranges):** there the range, not the method, decided the value; a wider range may choose differently.")
        out.append("")
    headers = ["suite", "scenario", "strategy", "search space: chosen value", "trials", "test runs"]
    out.append("| " + " | ".join(headers) + " |")
    out.append("|" + "|".join("---" for _ in headers) + "|")
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out + [""]
