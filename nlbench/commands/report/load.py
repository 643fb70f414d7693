"""Reading stored runs for the report: every finished run under a directory, as one DataFrame.

`load_runs` reads the store once (`nlbench.core.store.read_runs`: every run checked against the
declared schema before it is counted), adds what the report needs from each result.json (first error
line, time per experience, memory kind, device), counts a run stored under two names once, and
separates corrupt runs (skipped, with a message naming the file and the field) and unfinished ones
(spec.json without a `done` marker). Damaged `selection.json` files (`nlbench tune`'s record of the
tuned runs; `nlbench.core.selection`) are reported among the skipped, one message per file. Every run
is checked before anything is drawn, so a bad run can never stop a report half-written. `key_columns`
and `add_labels` then name each run's configuration. pandas and numpy are imported inside the functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nlbench.commands.report.labels import METRICS, SPEC_KEYS, label


def load_runs(results_dir: Path) -> tuple[Any, list[str], list[Path]]:
    """(runs DataFrame, skip messages, unfinished run dirs); UserError when there is nothing to report.

    Adds to `store.results_frame`'s columns: `error` (first line), `time_per_exp_s` (mean training time
    per experience), `peak_memory_kind` and `device`, read from each run's result.json.
    """
    from nlbench.core.selection import selected_run_ids
    from nlbench.core.store import DONE, read_runs, results_frame
    from nlbench.errors import UserError

    root = Path(results_dir)
    if not root.exists():
        raise UserError(f"results directory {root} does not exist; run `nlbench run` first, or give the directory that holds the runs")
    if not root.is_dir():
        raise UserError(f"results directory {root} is not a directory")
    import numpy as np  # after the checks above: a wrong path is answered without numpy's import time
    unfinished = sorted(p.parent for p in root.rglob("spec.json") if not (p.parent / DONE).exists())
    records, skipped = read_runs(root)
    runs = results_frame(records)
    if "holdout" in runs.columns:  # tuning trials (`nlbench tune`): validation scores, never reported as results
        keep = ~(runs["holdout"].fillna(0.0).astype(float) > 0)
        records = [record for record, kept in zip(records, keep) if kept]  # stays row-aligned with `runs`
        runs = runs[keep].reset_index(drop=True)
    if runs.empty:
        detail = f" ({len(skipped)} corrupt run(s) skipped: {'; '.join(skipped)})" if skipped else ""
        extra = f"; {len(unfinished)} unfinished run(s) without a '{DONE}' marker" if unfinished else ""
        raise UserError(f"no finished runs under {root}{detail}{extra}; run `nlbench run --out {root}` first")

    skipped += selected_run_ids(root)[1]  # the Verdicts read the same files, and use only the valid ones
    duplicated = runs["run_id"].duplicated(keep="first")
    for path in runs.loc[duplicated, "path"]:
        skipped.append(f"skipping {path}: same run id as another stored run (the same spec stored under two names); counted once")
    runs = runs.loc[~duplicated].reset_index(drop=True)

    errors, times, kinds, devices = [], [], [], []
    for result in (result for keep, (_, _, result) in zip(~duplicated, records) if keep):
        error = result.get("error")
        errors.append(str(error).strip().splitlines()[0] if error else "")
        train = [t for t in (result.get("experience_train_time_s") or []) if isinstance(t, (int, float))]
        times.append(float(np.mean(train)) if train else math.nan)
        kinds.append(result.get("peak_memory_kind", ""))
        devices.append(result.get("device", ""))
    runs["status"] = [s if isinstance(s, str) and s else "unknown" for s in runs["status"]]
    runs["error"] = errors
    runs["time_per_exp_s"] = times
    runs["peak_memory_kind"] = kinds
    runs["device"] = devices
    for metric in METRICS:
        if metric not in runs.columns:
            runs[metric] = math.nan
    return runs, skipped, unfinished


def unfinished_message(path: Path) -> str:
    return (f"skipping {path}: it has spec.json but no 'done' marker (a run that was killed or is still being "
            "written); not counted")


def key_columns(runs: Any) -> list[str]:
    hp = sorted(c for c in runs.columns if c.startswith("hp."))
    return [c for c in SPEC_KEYS if c in runs.columns] + hp


def add_labels(runs: Any, keys: list[str]) -> None:
    """`_k_<col>` label columns, a per-strategy `config` label and a display `group_label`."""
    for column in keys:
        runs[f"_k_{column}"] = [label(v) for v in runs[column]]
    configs = []
    varying: dict[tuple, list[str]] = {}
    for ident, block in runs.groupby(["suite", "scenario", "strategy"], sort=False):
        varying[ident] = [c for c in keys if c not in ("suite", "scenario", "strategy") and block[f"_k_{c}"].nunique() > 1]
    for _, row in runs.iterrows():
        cols = varying[(row["suite"], row["scenario"], row["strategy"])]
        configs.append("; ".join(f"{c.removeprefix('hp.')}={row[f'_k_{c}']}" for c in cols))
    runs["config"] = configs
    runs["group_label"] = [s if not c else f"{s} ({c})" for s, c in zip(runs["strategy"], runs["config"])]
